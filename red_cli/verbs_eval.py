"""`red eval`, `red report`, `red explain` once Hydra has composed their config.

Checks first (every invalid value named at once), then the work; a mistake the user can fix
(a missing run, an unreachable judge) ends with one line, not a traceback.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from red_cli.checks import DEVICES, REDISTRIBUTION_MODES, ConfigError, _Collector
from red_cli.cli import fail


def _check_missing(c: _Collector, cfg: Any) -> None:
    from omegaconf import OmegaConf

    for key in sorted(OmegaConf.missing_keys(cfg)):
        c.errors.append(f"{key}: required, give {key}=...")


def _check_sampling(c: _Collector, cfg: Any) -> None:
    s = cfg.sampling
    for key, ok, allowed in (("max_new_tokens", lambda v: v >= 1, "must be >= 1"),
                             ("temperature", lambda v: v > 0, "must be > 0"),
                             ("top_k", lambda v: v >= 0, "must be >= 0"),
                             ("top_p", lambda v: 0 < v <= 1, "must be in (0, 1]")):
        if s[key] is not None:
            c.require(ok(s[key]), f"sampling.{key}", s[key], allowed)
    mpl = cfg.prompts.max_prompt_length
    c.require(mpl is None or mpl >= 1, "prompts.max_prompt_length", mpl, "must be >= 1 or null")
    c.choice("device", cfg.device, DEVICES)


def validate_eval(cfg: Any) -> None:
    c = _Collector()
    _check_missing(c, cfg)
    _check_sampling(c, cfg)
    c.require(cfg.prompts.n >= 1, "prompts.n", cfg.prompts.n, "must be >= 1")
    c.require(cfg.batch_size >= 1, "batch_size", cfg.batch_size, "must be >= 1")
    c.require(cfg.tie_margin >= 0, "tie_margin", cfg.tie_margin, "must be >= 0")
    c.require(cfg.bootstrap_samples >= 1, "bootstrap_samples", cfg.bootstrap_samples, "must be >= 1")
    c.require(0 < cfg.confidence < 1, "confidence", cfg.confidence, "must be in (0, 1)")
    j = cfg.judge
    if j.kind == "llm":
        c.require(j.base_url.startswith(("http://", "https://")), "judge.base_url", j.base_url,
                  "must start with http:// or https://")
        c.require(j.concurrency >= 1, "judge.concurrency", j.concurrency, "must be >= 1")
        c.require(j.max_retries >= 0, "judge.max_retries", j.max_retries, "must be >= 0")
        c.require(j.backoff_s >= 0, "judge.backoff_s", j.backoff_s, "must be >= 0")
        c.require(j.timeout_s > 0, "judge.timeout_s", j.timeout_s, "must be > 0")
        c.require(j.max_tokens >= 1, "judge.max_tokens", j.max_tokens, "must be >= 1")
        for field in ("{prompt}", "{response_a}", "{response_b}"):
            c.require(field in j.user_template, "judge.user_template", "...",
                      f"must contain {field}")
    if c.errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(c.errors))


def validate_report(cfg: Any) -> None:
    from red_cli.report import BANDS

    c = _Collector()
    _check_missing(c, cfg)
    if c.errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(c.errors))
    c.require(len(cfg.runs) >= 1, "runs", list(cfg.runs), "name at least one directory")
    c.require(cfg.final_window >= 1, "final_window", cfg.final_window, "must be >= 1")
    c.require(cfg.smooth >= 1, "smooth", cfg.smooth, "must be >= 1")
    c.choice("band", cfg.band, BANDS)
    if c.errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(c.errors))


def validate_explain(cfg: Any) -> None:
    c = _Collector()
    _check_missing(c, cfg)
    _check_sampling(c, cfg)
    c.require(cfg.n_samples >= 1, "n_samples", cfg.n_samples, "must be >= 1")
    c.require(len(cfg.modes) >= 1, "modes", list(cfg.modes), "name at least one mode")
    for mode in cfg.modes:
        c.choice("modes", mode, REDISTRIBUTION_MODES)
    if c.errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(c.errors))


def _run(verb: str, validate, work, cfg: DictConfig) -> None:
    from red_cli.data import DatasetError
    from red_cli.evaluate import EvalError
    from red_cli.judges import JudgeError
    from red_cli.report import ReportError

    try:
        validate(cfg)
        if verb != "report":
            from red_cli import distributed

            distributed.prepare_env(cfg.device)
            distributed.quiet_libraries()
        work(cfg)
    except (ConfigError, EvalError, JudgeError, ReportError, DatasetError, FileNotFoundError) as err:
        fail(verb, str(err))


def eval_verb(cfg: DictConfig) -> None:
    from red_cli.evaluate import run_eval

    _run("eval", validate_eval, run_eval, cfg)


def report_verb(cfg: DictConfig) -> None:
    from red_cli.report import run_report

    _run("report", validate_report, run_report, cfg)


def explain_verb(cfg: DictConfig) -> None:
    from red_cli.explain import run_explain

    _run("explain", validate_explain, run_explain, cfg)
