"""The `red` command: a small dispatcher over Hydra apps, one per verb.

`red <verb> [hydra arguments]` hands everything after the verb to a Hydra app over
`conf/<verb>.yaml`, so overrides, `--cfg job`, `--help`, `-m` and `hydra.searchpath` work as
in any Hydra program. Heavy imports (torch, transformers, deepspeed) happen inside the verbs,
so `red --help` answers at once.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

USAGE = """usage: red <verb> [overrides ...] [hydra flags]

red: an RLHF experiment runner for token-level reward redistribution.

verbs:
{verbs}

Every verb is a Hydra app: `red train --help` lists its config groups, `red train --cfg job`
prints the composed config, `red train -m redistribution=sparse,td seed=0,1` sweeps.
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
    "train": ("train", _train, "run PPO with per-token rewards (sparse, td, abc, uniform) under DeepSpeed"),
    "eval": ("eval", _eval, "win rate of a run vs a baseline (gold / reward_model / llm judge) with a bootstrap CI"),
    "report": ("report", _report, "table and learning curves of a sweep, runs grouped by overrides minus seed"),
    "explain": ("explain", _explain, "pictures of per-token credit under sparse / td / abc for a few samples"),
    "toy": ("toy", _toy, "build (or load from cache) the embedded toy task and print its summary"),
}

# Verbs that take directories as bare arguments: `red report DIR ...` -> runs=[...],
# `red eval DIR` / `red explain DIR` -> run=...
_POSITIONAL_KEY = {"report": "runs", "eval": "run", "explain": "run"}
# Keys whose values are paths: quoted for Hydra when they hold its special characters.
_PATH_KEYS = ("run", "baseline", "output_dir")
# Hydra flags followed by a value that is not an override.
_VALUE_FLAGS = {"-c", "--cfg", "-p", "--package", "-cp", "--config-path", "-cn", "--config-name",
                "-cd", "--config-dir", "--experimental-rerun"}
_INFO_CHOICES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def _hydra_quote(text: str) -> str:
    """A string as a Hydra quoted value: no sweep on commas, no interpolation on `${`."""
    # Hydra reads backslashes literally except before a quote or the closing quote.
    text = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", text)
    text = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, text)
    return "'" + text.replace("${", "\\${") + "'"


def _path_arguments(verb: str, args: list[str]) -> list[str]:
    """Bare directory arguments -> one override; path values -> quoted (run dirs hold `=`, `,`)."""
    key = _POSITIONAL_KEY[verb]
    out, paths, skip = [], [], False
    for k, arg in enumerate(args):
        if skip or arg.startswith("-") or (args[k - 1:k] == ["--info"] and arg in _INFO_CHOICES):
            skip = arg in _VALUE_FLAGS
            out.append(arg)
            continue
        name, eq, value = arg.partition("=")
        if not eq or os.path.exists(arg):
            paths.append(arg)
        elif name in _PATH_KEYS and value and value[0] not in "'\"" and re.search(r"[,=${}\[\]' ]", value):
            out.append(f"{name}={_hydra_quote(value)}")
        else:
            out.append(arg)
    if not paths:
        return out
    if key == "runs":
        return [*out, "runs=[" + ",".join(_hydra_quote(p) for p in paths) + "]"]
    if len(paths) > 1:
        sys.stderr.write(f"red {verb}: one run or model path expected, got {len(paths)}: "
                         + ", ".join(paths) + "\n")
        raise SystemExit(2)
    return [*out, f"run={_hydra_quote(paths[0])}"]


def _usage() -> str:
    width = max(len(v) for v in VERBS)
    return USAGE.format(verbs="\n".join(f"  {v.ljust(width)}  {h}" for v, (_, _, h) in VERBS.items()))


def _show_sweep_configs(verb: str, args: list[str]) -> None:
    """`-m ... --cfg job`: Hydra refuses the pair; print every job's composed config instead."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from red_cli.config import conf_dir

    flags = {"-m", "--multirun", "-c", "--cfg", "job", "hydra", "all", "-p", "--package"}
    overrides = [a for a in args if a not in flags]
    which = args[args.index("-c" if "-c" in args else "--cfg") + 1]
    parsed = OverridesParser.create().parse_overrides(overrides)
    jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3", job_name=verb):
        for num, job in enumerate(jobs):
            cfg = compose(VERBS[verb][0], overrides=job, return_hydra_config=which != "job")
            if which == "hydra":
                cfg = cfg.hydra
            elif which == "job" and "hydra" in cfg:
                del cfg["hydra"]
            sys.stdout.write(f"# job {num}: {' '.join(job)}\n{OmegaConf.to_yaml(cfg)}\n")


def run_verb(verb: str, args: list[str]) -> None:
    import hydra

    from red_cli.config import conf_dir, register_configs, register_resolvers

    config_name, task, _ = VERBS[verb]
    register_resolvers()
    register_configs()
    if {"-m", "--multirun"} & set(args) and {"-c", "--cfg"} & set(args):
        _show_sweep_configs(verb, args)
        return
    # Hydra reads sys.argv; the program name shows in its --help.
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
    if verb in _POSITIONAL_KEY:
        args = _path_arguments(verb, args)
    run_verb(verb, args)


if __name__ == "__main__":
    main()
