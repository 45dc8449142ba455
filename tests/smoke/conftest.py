"""Shared fixtures for end-to-end tests: one reduced toy world (conf/toy/tiny.yaml) per session.

RED_CACHE from the environment is reused when set (CI points it inside the clone), so the
toy world and DeepSpeed's compiled ops are built once per machine, not once per test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from red_cli.config import conf_dir, register_configs, register_resolvers

REPO = Path(__file__).resolve().parents[2]

# A few small iterations: enough to exercise every step, small enough for 2 cores. One
# thread: runs compared bit for bit must not pick their thread count from the machine's load.
QUICK = ["toy=tiny", "experiment=toy_quick", "ppo.rollout_batch_size=8", "ppo.mini_batch_size=4",
         "ppo.micro_batch_size=2", "ppo.max_new_tokens=12", "logger=disabled",
         "logger.progress_bar=false", "threads=1"]


@pytest.fixture(scope="session", autouse=True)
def red_env(tmp_path_factory):
    if not os.environ.get("RED_CACHE"):
        os.environ["RED_CACHE"] = str(tmp_path_factory.mktemp("red_cache"))
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(os.environ["RED_CACHE"]) / "torch_extensions"))
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["WANDB_MODE"] = "disabled"
    yield


@pytest.fixture(scope="session")
def tiny_toy(red_env):
    from red_cli.toy.build import ensure_toy

    cfg = compose_train([*QUICK], "/tmp/unused")
    return ensure_toy(cfg.toy, progress=False)


def compose_train(overrides: list[str], run_dir) -> OmegaConf:
    """The config `red train <overrides>` would run, resolved, writing into ``run_dir``."""
    register_resolvers()
    register_configs()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3", job_name="test"):
        cfg = compose("train", overrides=overrides)
    cfg.output_dir = str(run_dir)
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))


def red(*args: str, cwd, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real `red` command in a subprocess."""
    # In-process runs leave torch.distributed's rendezvous variables behind; a child must not
    # join that (single-process) world.
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    proc = subprocess.run([sys.executable, "-m", "red_cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"red {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc
