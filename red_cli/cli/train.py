"""`red train` and `red toy` once Hydra has composed their config.

Checks first, then the run directory, then the work: a config error leaves no directory
behind, and a run directory says in `run.json` whether it finished, failed or was
interrupted, and why. In a sweep (`-m`), a point that fails records it in its own run.json
and the sweep goes on; the sweep ends with one line naming the points that failed
(``red_cli.cli.sweeps``).
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from red_cli.cli import fail, remove_if_empty
from red_cli.config.checks import check_environment, validate_train
from red_cli.errors import ConfigError, Interrupted, UserError

log = logging.getLogger("red")

# What `red train resume=DIR` may change: how long the run goes on and how it reports; any
# other key would make the resumed run a different experiment from the one it continues.
RESUME_SAFE_KEYS = ("ppo.iterations", "checkpoint_every", "sample_every", "threads",
                    "threads_follow_load", "logger", "launcher.master_port", "resume")


def train_verb(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    fresh_dir = Path(cfg.output_dir)
    overrides = list(hydra_cfg.overrides.task)
    try:
        validate_train(cfg)
        check_environment(cfg)
        if cfg.resume:
            run_dir, frozen = _resume_target(cfg, overrides)
        else:
            from red_cli import runs

            run_dir, frozen = fresh_dir, runs.freeze(cfg)
            # The names a run is shown by (wandb, red eval): its directory's, and its sweep.
            frozen.logger.name = frozen.logger.name or run_dir.name
            if multirun and frozen.logger.group is None:
                frozen.logger.group = f"sweep {run_dir.parent.parent.name}/{run_dir.parent.name}"
            _check_models(frozen)
    except UserError as err:
        _refused(fresh_dir, str(err), multirun)
        return

    from red_cli import runs, runtime

    # Before anything imports deepspeed: it picks its accelerator at import time.
    runtime.prepare_env(frozen.device)
    if cfg.resume:
        _remove_fresh(fresh_dir)
        runs.save_config(run_dir, frozen)
        log.info("resuming %s from its last checkpoint", run_dir)
    else:
        runs.create(run_dir, frozen, overrides)
    runtime.log_to_file(run_dir / "train.log")
    started = time.time()

    world = frozen.launcher.nproc_per_node * frozen.launcher.nnodes
    try:
        if world > 1:
            from red_cli.train.distributed import launch_ranks

            launch_ranks(run_dir, frozen.launcher, resume=bool(cfg.resume))
        else:
            from red_cli.train.loop import train

            stop = runtime.StopRequest().install()
            try:
                runs.run_guarded(run_dir, lambda: train(frozen, run_dir, resume=bool(cfg.resume),
                                                         stop=stop))
            finally:
                stop.uninstall()
    except (UserError, FileNotFoundError, OSError, KeyboardInterrupt) as err:
        _failed(run_dir, err, multirun)
        return
    print(closing_summary(run_dir, time.time() - started, multirun))


def _check_models(cfg: DictConfig) -> None:
    """Models and tokenizers the config names, read without their weights (seconds)."""
    from red_cli.models.preflight import check_models

    check_models(cfg)


def _resume_target(cfg: DictConfig, overrides: list[str]) -> tuple[Path, DictConfig]:
    """The run to continue and its frozen config, with the overrides a resume may change."""
    from red_cli import runs

    run_dir = Path(cfg.resume).expanduser()
    bad = [o for o in overrides if not _resume_safe(o)]
    if bad:
        raise ConfigError(
            f"resume={cfg.resume}: a resumed run keeps its config.yaml; these overrides would "
            f"change it: {', '.join(bad)}. On resume only {', '.join(RESUME_SAFE_KEYS[:-1])} "
            "may change; start a new run (or edit that run's config.yaml) to change others")
    if not run_dir.is_dir() or not runs.is_run_dir(run_dir):
        problem = runs.resumable_problem(run_dir)
        raise ConfigError(f"resume={cfg.resume}: {problem}")
    frozen = runs.load_frozen(run_dir)
    changed = {}
    for item in overrides:
        key, _, _ = item.lstrip("+~").partition("=")
        if key != "resume":
            changed[key] = OmegaConf.select(cfg, key)
    for key, value in changed.items():
        OmegaConf.update(frozen, key, value, merge=False)
    problem = runs.resumable_problem(run_dir, iterations=frozen.ppo.iterations)
    if problem:
        raise ConfigError(f"resume={cfg.resume}: {problem}")
    if changed:
        log.info("resume: applying %s", ", ".join(f"{k}={v}" for k, v in changed.items()))
    validate_train(frozen)
    return run_dir, frozen


def _resume_safe(override: str) -> bool:
    key = override.lstrip("+~").partition("=")[0]
    return key.startswith("hydra.") or any(key == k or key.startswith(k + ".")
                                           for k in RESUME_SAFE_KEYS)


def _remove_fresh(run_dir: Path) -> None:
    """Remove a run directory Hydra made that holds nothing but its own .hydra record."""
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {".hydra"}:
        shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
    remove_if_empty(run_dir)


def _refused(run_dir: Path, message: str, multirun: bool) -> None:
    """A config error: no run happened. Alone, the directory goes; in a sweep, the point's
    directory stays with run.json saying why, and the sweep goes on."""
    if not multirun:
        _remove_fresh(run_dir)
        fail("train", message)
    from red_cli import runs

    run_dir.mkdir(parents=True, exist_ok=True)
    runs.write_status(run_dir, "failed", error=message)
    sys.stderr.write(f"red train: sweep point {run_dir.name} refused: {message}\n")


def _failed(run_dir: Path, err: BaseException, multirun: bool) -> None:
    """One line for a run that stopped; run.json already says failed or interrupted."""
    from red_cli import runs

    resume = f"red train resume={run_dir}"
    if isinstance(err, Interrupted):
        message = f"{err}; continue with: {resume}"
    elif isinstance(err, KeyboardInterrupt):
        message = (f"stopped at once ({err or 'interrupt'}); continue from the last checkpoint "
                   f"with: {resume}")
    elif isinstance(err, OSError) and err.errno == errno.ENOSPC:
        message = (f"no space left on device ({err.filename or 'writing the run'}); free some "
                   f"and continue with: {resume}")
    elif isinstance(err, UserError | FileNotFoundError):
        message = f"{err} (run directory {run_dir} marked failed)"
    else:
        raise err
    status = runs.read_status(run_dir)
    if status == "running":  # a launcher whose ranks died before they could say so
        runs.write_status(run_dir, "failed", error=str(err))
    if multirun and not isinstance(err, KeyboardInterrupt | Interrupted):
        sys.stderr.write(f"red train: sweep point {run_dir.name} failed: {message}\n")
        return
    fail("train", message)


def closing_summary(run_dir: Path, seconds: float, multirun: bool) -> str:
    """What a finished run prints: its final numbers, wall time, and what to run next."""
    from red_cli import runs

    metrics = runs.read_metrics(run_dir / "metrics.jsonl")
    last = metrics[-1] if metrics else {}
    window = metrics[-5:]

    def mean(key: str) -> str:
        values = [m[key] for m in window if key in m]
        return f"{sum(values) / len(values):.3f}" if values else "-"

    parts = [f"{name} {mean(key)}" for name, key in (
        ("score", "objective/score"), ("kl", "objective/kl"), ("gold", "objective/gold"),
        ("cost", "objective/cost"), ("gold cost", "objective/gold_cost"),
        ("lambda", "lagrange/lambda"))
        if any(key in m for m in window)]
    minutes, secs = divmod(int(seconds), 60)
    lines = [f"red train: done, {last.get('iteration', -1) + 1} iterations in {minutes}m{secs:02d}s "
             f"-> {run_dir}",
             f"  final (mean of the last {len(window)} iterations): " + ", ".join(parts)]
    if not multirun:
        lines += [f"  next: red eval {run_dir}      # win rate vs the SFT policy, with a CI",
                  f"        red explain {run_dir}   # where each mode puts the credit"]
    return "\n".join(lines)


def toy_verb(cfg: DictConfig) -> None:
    from red_cli.toy.build import ensure_toy, format_summary

    try:
        artifacts = ensure_toy(cfg.toy, progress=not cfg.json)
    except ValueError as err:  # sizes that cannot make a toy world, named by the check
        fail("toy", str(err))
    if cfg.json:
        print(json.dumps(artifacts.summary, indent=2, default=str))
    else:
        print(format_summary(artifacts.summary))
