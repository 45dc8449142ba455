"""What `red <verb>` does with its arguments before Hydra sees them.

Hydra parses overrides (`key=value`) and a few flags. Users arrive with other habits
(`--redistribution abc`, `redistribution.mode=abc`, a run directory whose name holds `=` and
`,`), and some mistakes only show after Hydra has made a run directory (an unwritable
`hydra.run.dir`). Each gets one line here, naming what to type instead.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# Hydra's flags; those in VALUE_FLAGS take the next argument as their value.
HYDRA_FLAGS = {"-h", "--help", "--hydra-help", "--version", "-c", "--cfg", "--resolve", "-p",
               "--package", "-r", "--run", "-m", "--multirun", "-sc", "--shell-completion",
               "-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir",
               "--experimental-rerun", "-i", "--info"}
VALUE_FLAGS = {"-c", "--cfg", "-p", "--package", "-cp", "--config-path", "-cn", "--config-name",
               "-cd", "--config-dir", "--experimental-rerun"}
INFO_CHOICES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}

# Verbs that take directories as bare arguments: `red report DIR ...` -> runs=[...],
# `red eval DIR` / `red explain DIR` -> run=...
POSITIONAL_KEY = {"report": "runs", "eval": "run", "explain": "run"}
# Keys whose values are paths: quoted for Hydra when they hold its special characters
# (run directories are named after their overrides: `..._ppo.iterations=4,seed=1`).
PATH_KEYS = ("run", "baseline", "output_dir", "resume", "hydra.run.dir", "hydra.sweep.dir")
# Keys a config-group choice sets: typed on the command line they would disagree with the
# group Hydra composed (and its options' other keys), so the group is the way to choose.
CHOICE_KEYS = {"redistribution.mode": "redistribution", "generation.backend": "generation",
               "judge.kind": "judge"}


class ArgumentError(ValueError):
    """A command line Hydra would misread; the message says what to type instead."""


def hydra_quote(text: str) -> str:
    """A string as a Hydra quoted value: no sweep on commas, no interpolation on `${`."""
    # Hydra reads backslashes literally except before a quote or the closing quote.
    text = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", text)
    text = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, text)
    return "'" + text.replace("${", "\\${") + "'"


def overrides_of(args: list[str]) -> list[str]:
    """The override arguments (not flags, not flag values) of a command line."""
    out, skip = [], False
    for k, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg.startswith("-") or (args[k - 1:k] in (["--info"], ["-i"]) and arg in INFO_CHOICES):
            skip = arg in VALUE_FLAGS
            continue
        out.append(arg)
    return out


def check_flags(verb: str, args: list[str]) -> None:
    """Flags Hydra does not know: argparse habits get the override they meant."""
    for k, arg in enumerate(args):
        if arg in ("-sc", "--shell-completion") or arg.startswith("--shell-completion="):
            raise ArgumentError(
                "shell completion is not available for red (Hydra's completion cannot see "
                f"through `red {verb}`); `red {verb} --help` lists the groups and keys")
        if not arg.startswith("-") or arg in HYDRA_FLAGS or re.fullmatch(r"-\d.*", arg):
            continue
        name, eq, value = arg.lstrip("-").partition("=")
        if not eq and k + 1 < len(args) and not args[k + 1].startswith("-"):
            value = args[k + 1]
        hint = f"{name}={value}" if value else f"{name}=..."
        raise ArgumentError(f"unknown flag {arg!r}: overrides take no dashes, e.g. "
                            f"`red {verb} {hint}` (`red {verb} --help` lists them)")


def check_choice_keys(verb: str, args: list[str]) -> None:
    """`redistribution.mode=abc` -> use `redistribution=abc` (the group sets the mode)."""
    for arg in overrides_of(args):
        key, eq, value = arg.lstrip("+~").partition("=")
        if eq and key in CHOICE_KEYS:
            group = CHOICE_KEYS[key]
            raise ArgumentError(f"{key} is set by choosing the config group: use "
                                f"`red {verb} {group}={value}` instead of {arg!r}")


def quote_paths(verb: str, args: list[str]) -> list[str]:
    """Bare directory arguments -> one override; path values -> quoted (run dirs hold `=`, `,`)."""
    out, paths, skip = [], [], False
    for k, arg in enumerate(args):
        if skip or arg.startswith("-") or (args[k - 1:k] in (["--info"], ["-i"])
                                           and arg in INFO_CHOICES):
            skip = arg in VALUE_FLAGS
            out.append(arg)
            continue
        name, eq, value = arg.partition("=")
        if verb in POSITIONAL_KEY and (not eq or os.path.exists(arg)):
            paths.append(arg)
        elif name in PATH_KEYS and value and value[0] not in "'\"" \
                and re.search(r"[,=${}\[\]' ]", value):
            out.append(f"{name}={hydra_quote(value)}")
        else:
            out.append(arg)
    if not paths:
        return out
    if POSITIONAL_KEY[verb] == "runs":
        return [*out, "runs=[" + ",".join(hydra_quote(p) for p in paths) + "]"]
    if len(paths) > 1:
        raise ArgumentError(f"one run or model path expected, got {len(paths)}: "
                            + ", ".join(paths))
    return [*out, f"run={hydra_quote(paths[0])}"]


def check_output_dirs(args: list[str]) -> None:
    """Where Hydra will make the run directory must be writable: Hydra makes it before any
    check of ours runs, and fails with a traceback."""
    targets = [("hydra.run.dir", None), ("hydra.sweep.dir", None)]
    given = {}
    for arg in overrides_of(args):
        key, eq, value = arg.partition("=")
        if eq and key in dict(targets):
            given[key] = value.strip("'\"")
    for key, value in given.items():
        _check_writable(Path(value).expanduser(), key)
    if not given:
        _check_writable(Path("outputs"), "the working directory (runs go to ./outputs)")


def _check_writable(path: Path, what: str) -> None:
    """Make (and remove) a folder where the run directory's first missing parent would go:
    the only test that also catches read-only mounts and /proc, where access() says yes."""
    import tempfile

    probe = path.expanduser().absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ArgumentError(f"{what}={str(path)!r}: {probe} is a file, not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".red-write-test-", dir=probe))
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ArgumentError(f"{what}={str(path)!r}: cannot create it under {probe} ({reason})"
                            if what.startswith("hydra.") else
                            f"{what}: cannot create ./outputs under {probe} ({reason}); run from "
                            "another directory or set hydra.run.dir=/a/writable/dir") from None
