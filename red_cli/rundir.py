"""Run directories: the frozen config, the environment, and whether the run finished.

A run directory holds config.yaml (resolved, written once before any work), environment.txt,
run.json (status: running | complete | failed), metrics.jsonl, checkpoints/, samples/, plots/.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def freeze(cfg: DictConfig) -> DictConfig:
    """Resolve every interpolation once (``${now:...}``, ``${hydra:...}``), so ranks never do."""
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))


def load_frozen(run_dir: Path) -> DictConfig:
    """A run's config.yaml, with keys added to the schemas since it was written at their
    defaults (so a run made by an older `red` still resumes and evaluates)."""
    from red_cli.config import TrainConfig

    frozen = OmegaConf.load(Path(run_dir) / "config.yaml")
    merged = OmegaConf.merge(OmegaConf.structured(TrainConfig), frozen)
    return OmegaConf.create(OmegaConf.to_container(merged))


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=5, check=False,
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def environment_text() -> str:
    import deepspeed
    import torch
    import transformers

    if torch.cuda.is_available():
        device = f"cuda x{torch.cuda.device_count()} ({torch.cuda.get_device_name(0)})"
    else:
        device = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    lines = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "deepspeed": deepspeed.__version__,
        "red_git_commit": _git_commit(),
        "platform": platform.platform(),
        "device": device,
        "command": " ".join(sys.argv),
    }
    return "".join(f"{k}: {v}\n" for k, v in lines.items())


def write_status(run_dir: Path, status: str, **extra) -> None:
    payload = {"status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra}
    tmp = run_dir / "run.json.tmp"
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(run_dir / "run.json")


def read_status(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "run.json").read_text())["status"]
    except (OSError, ValueError, KeyError):
        return None


def create(run_dir: Path, frozen: DictConfig, overrides: list[str]) -> None:
    """Write config.yaml, environment.txt and run.json (with the command-line overrides,
    which `red report` groups runs by)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(frozen, run_dir / "config.yaml")
    (run_dir / "environment.txt").write_text(environment_text())
    (run_dir / "overrides.json").write_text(json.dumps(list(overrides)) + "\n")
    write_status(run_dir, "running")


def resumable_problem(run_dir: Path) -> str | None:
    """Why ``run_dir`` cannot be resumed, or None if it can."""
    if not run_dir.is_dir():
        return "no such directory"
    if not (run_dir / "config.yaml").is_file():
        return "not a red run directory (no config.yaml)"
    if read_status(run_dir) == "complete":
        return "that run already finished"
    if not (run_dir / "checkpoints" / "latest").exists():
        return "no checkpoint to resume from (checkpoints/latest is missing)"
    return None


def read_overrides(run_dir: Path) -> list[str]:
    path = run_dir / "overrides.json"
    return json.loads(path.read_text()) if path.exists() else []


def run_guarded(run_dir: Path, work: Callable[[], object]) -> None:
    """Run ``work`` and record in run.json whether it completed or failed (and why)."""
    write_status(run_dir, "running")
    try:
        work()
    except BaseException as err:
        write_status(run_dir, "failed", error=f"{type(err).__name__}: {err}")
        raise
    write_status(run_dir, "complete")
