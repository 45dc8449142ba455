"""`red eval`, `red report`, `red explain` once Hydra has composed their config.

Checks first (every invalid value named at once), then the work; a mistake the user can fix
(a missing run, an unreachable judge) ends with one line, not a traceback.
"""

from __future__ import annotations

from omegaconf import DictConfig

from red_cli.cli import fail
from red_cli.config.checks import validate_eval, validate_explain, validate_report
from red_cli.errors import UserError


def _run(verb: str, validate, work, cfg: DictConfig) -> None:
    try:
        validate(cfg)
        if verb != "report":
            from red_cli import runtime

            runtime.prepare_env(cfg.device)
            runtime.quiet_libraries()
        work(cfg)
    except (UserError, FileNotFoundError) as err:
        fail(verb, str(err))


def eval_verb(cfg: DictConfig) -> None:
    from red_cli.eval.evaluate import run_eval

    _run("eval", validate_eval, run_eval, cfg)


def report_verb(cfg: DictConfig) -> None:
    from red_cli.eval.report import run_report

    _run("report", validate_report, run_report, cfg)


def explain_verb(cfg: DictConfig) -> None:
    from red_cli.eval.explain import run_explain

    _run("explain", validate_explain, run_explain, cfg)
