"""The `red` command: a small dispatcher over Hydra apps, one per verb.

`red <verb> [hydra arguments]` hands everything after the verb to a Hydra app over
`conf/<verb>.yaml`, so overrides, `--cfg job`, `--help`, `-m` and `hydra.searchpath` work as
in any Hydra program. Heavy imports (torch, transformers, deepspeed) happen inside the verbs,
so `red --help` answers at once.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from red_cli.cli.args import (
    ArgumentError,
    check_choice_keys,
    check_flags,
    check_output_dirs,
    overrides_of,
    quote_paths,
)
from red_cli.errors import UserError

USAGE = """usage: red <verb> [overrides ...] [hydra flags]

red: an RLHF experiment runner for token-level reward redistribution.

verbs:
{verbs}

Every verb is a Hydra app: `red train --help` lists its config groups and keys, `red train
--cfg job` prints the composed config, `red train -m redistribution=sparse,td seed=0,1` sweeps.
"""


def fail(verb: str, message: str, run_dir: str | os.PathLike | None = None) -> None:
    """Exit with one clear message; remove the run directory Hydra made if nothing is in it."""
    if run_dir is not None:
        remove_if_empty(Path(run_dir))
    sys.stderr.write(f"red {verb}: {message}\n")
    raise SystemExit(2)


def remove_if_empty(path: Path) -> None:
    """Remove an empty run directory and the empty parents Hydra made for it, up to and
    including the `outputs` (or `multirun`) folder itself."""
    path = path.resolve()
    while path.is_dir() and not any(path.iterdir()) and path != path.parent:
        shutil.rmtree(path)
        if path.name in ("outputs", "multirun"):
            break
        path = path.parent


def _train(cfg) -> None:
    from red_cli.cli.train import train_verb

    train_verb(cfg)


def _toy(cfg) -> None:
    from red_cli.cli.train import toy_verb

    toy_verb(cfg)


def _eval(cfg) -> None:
    from red_cli.cli.evaluate import eval_verb

    eval_verb(cfg)


def _report(cfg) -> None:
    from red_cli.cli.evaluate import report_verb

    report_verb(cfg)


def _explain(cfg) -> None:
    from red_cli.cli.evaluate import explain_verb

    explain_verb(cfg)


# verb -> (config name, task function, one-line help)
VERBS: dict[str, tuple[str, Callable, str]] = {
    "train": ("train", _train, "run PPO with per-token rewards (sparse, td, abc, uniform, ...) under DeepSpeed"),
    "eval": ("eval", _eval, "win rate of a run vs a baseline (gold / reward_model / llm judge) with a bootstrap CI"),
    "report": ("report", _report, "table and learning curves of a sweep, runs grouped by overrides minus seed"),
    "explain": ("explain", _explain, "pictures of per-token credit under sparse / td / abc for a few samples"),
    "toy": ("toy", _toy, "build (or load from cache) the embedded toy task and print its summary"),
}

def _usage() -> str:
    width = max(len(v) for v in VERBS)
    return USAGE.format(verbs="\n".join(f"  {v.ljust(width)}  {h}" for v, (_, _, h) in VERBS.items()))


def show_configs(verb: str, args: list[str]) -> None:
    """`--cfg job|hydra|all` (with or without -m): print each job's composed config, then (for
    job and all) run the start-up checks `red <verb>` would run, so a config it would refuse
    is not shown as fine."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from red_cli.config import checks, conf_dir

    flag = "-c" if "-c" in args else "--cfg"
    which = args[args.index(flag) + 1] if args.index(flag) + 1 < len(args) else ""
    if which not in ("job", "hydra", "all"):
        fail(verb, f"{flag} takes job, hydra or all, got {which!r}")
    overrides = overrides_of(args)
    package = next((args[k + 1] for k, a in enumerate(args[:-1]) if a in ("-p", "--package")), None)
    validate = {"train": lambda c: (checks.validate_train(c), checks.check_environment(c)),
                "eval": checks.validate_eval, "report": checks.validate_report,
                "explain": checks.validate_explain}.get(verb)
    problems = []
    try:
        jobs = [job for batch in BasicSweeper.split_arguments(
            OverridesParser.create().parse_overrides(overrides), None) for job in batch]
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3", job_name=verb):
            for num, job in enumerate(jobs):
                cfg = compose(VERBS[verb][0], overrides=job, return_hydra_config=which != "job")
                shown = cfg.hydra if which == "hydra" else cfg
                if which == "job" and "hydra" in shown:
                    del shown["hydra"]
                if package:
                    shown = OmegaConf.select(shown, package)
                head = f"# job {num}: {' '.join(job)}\n" if len(jobs) > 1 or {"-m", "--multirun"} & set(args) else ""
                sys.stdout.write(head + OmegaConf.to_yaml(shown, resolve="--resolve" in args) + "\n")
                if validate is not None and which != "hydra":
                    if "output_dir" in cfg and OmegaConf.is_missing(cfg, "output_dir") is False:
                        cfg.output_dir = "unused"
                    try:
                        validate(cfg)
                    except UserError as err:
                        problems.append((f"job {num}: " if len(jobs) > 1 else "") + str(err))
    except (HydraException, OmegaConfBaseException) as err:
        fail(verb, _first_lines(str(err)))
    if problems:
        text = "\n".join(p.removeprefix("invalid config:\n") for p in problems)
        fail(verb, f"the config above is invalid; red {verb} would refuse it:\n{text}")


def _first_lines(text: str, n: int = 6) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[:n])


def run_verb(verb: str, args: list[str]) -> None:
    import hydra

    from red_cli.config import conf_dir, register_configs, register_resolvers

    config_name, task, summary = VERBS[verb]
    if {"-h", "--help"} & set(args):
        from red_cli.cli.help import verb_help

        sys.stdout.write(verb_help(verb, summary, conf_dir()))
        return
    register_resolvers()
    register_configs()
    if {"-c", "--cfg"} & set(args):
        show_configs(verb, args)
        return
    # Hydra reads sys.argv; the program name shows in its messages.
    sys.argv = [f"red {verb}", *args]
    app = hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name=config_name)(task)
    app()


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(_usage())
        return
    verb, args = argv[0], argv[1:]
    if verb not in VERBS:
        sys.stderr.write(f"red: unknown verb {verb!r}; valid verbs: {', '.join(VERBS)}\n")
        raise SystemExit(2)
    try:
        check_flags(verb, args)
        check_choice_keys(verb, args)
        args = quote_paths(verb, args)
        if verb == "train" and not {"-h", "--help", "-c", "--cfg", "--info", "-i"} & set(args):
            check_output_dirs(args)
    except ArgumentError as err:
        fail(verb, str(err))
    run_verb(verb, args)


if __name__ == "__main__":
    main()
