"""`red train` and `red toy` once Hydra has composed their config.

Checks first, then the run directory, then the work: a config error leaves no directory
behind, and a run directory says in `run.json` whether it finished.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from red_cli.cli import fail, remove_if_empty
from red_cli.config.checks import check_paths, validate_train
from red_cli.errors import UserError

log = logging.getLogger("red")


def train_verb(cfg: DictConfig) -> None:
    run_dir = Path(cfg.output_dir)
    try:
        validate_train(cfg)
        check_paths(cfg)
    except UserError as err:
        fail("train", str(err), run_dir)

    from red_cli import runs, runtime

    # Before anything imports deepspeed: it picks its accelerator at import time.
    runtime.prepare_env(cfg.device)

    if cfg.resume:
        resume_dir = Path(cfg.resume)
        problem = runs.resumable_problem(resume_dir)
        if problem:
            fail("train", f"resume={cfg.resume}: {problem}", run_dir)
        remove_if_empty(run_dir)
        run_dir = resume_dir
        frozen = runs.load_frozen(run_dir)
        log.info("resuming %s from its last checkpoint", run_dir)
    else:
        from hydra.core.hydra_config import HydraConfig

        frozen = runs.freeze(cfg)
        runs.create(run_dir, frozen, list(HydraConfig.get().overrides.task))

    world = frozen.launcher.nproc_per_node * frozen.launcher.nnodes
    if world > 1:
        from red_cli.train.distributed import launch_ranks

        launch_ranks(run_dir, frozen.launcher, resume=bool(cfg.resume))
        return
    from red_cli.train.loop import train

    try:
        runs.run_guarded(run_dir, lambda: train(frozen, run_dir, resume=bool(cfg.resume)))
    except (FileNotFoundError, UserError) as err:
        # A path or dataset the user named: one line; run.json already says "failed".
        fail("train", f"{err} (run directory {run_dir} marked failed)")


def toy_verb(cfg: DictConfig) -> None:
    from red_cli.toy.build import ensure_toy, format_summary

    artifacts = ensure_toy(cfg.toy, progress=not cfg.json)
    if cfg.json:
        print(json.dumps(artifacts.summary, indent=2, default=str))
    else:
        print(format_summary(artifacts.summary))
