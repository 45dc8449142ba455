"""Run directories: the one home of what a run directory holds and how to read it.

A run directory holds config.yaml (resolved, written once before any work), environment.txt,
overrides.json (the command-line overrides, which `red report` groups by), run.json (status:
running | complete | failed, and why), metrics.jsonl (one line per iteration), checkpoints/
(with final_policy/ at the end), samples/, plots/, and eval/ and explain/ once those ran.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from red_cli.errors import Interrupted, UserError

log = logging.getLogger("red")


def freeze(cfg: DictConfig) -> DictConfig:
    """Resolve every interpolation once (``${now:...}``, ``${hydra:...}``), so ranks never do."""
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))


def load_frozen(run_dir: Path) -> DictConfig:
    """A run's config.yaml, with keys added to the schemas since it was written at their
    defaults (so a run made by an older `red` still resumes and evaluates)."""
    from red_cli.config.schema import TrainConfig

    frozen = _upgrade(OmegaConf.to_container(OmegaConf.load(Path(run_dir) / "config.yaml")))
    merged = OmegaConf.merge(OmegaConf.structured(TrainConfig), frozen)
    return OmegaConf.create(OmegaConf.to_container(merged))


def cost_model_node(cfg: Any) -> Any | None:
    """A train config's ``cost_model`` node when the run has a cost model (its path set);
    None without one, or for a config older than cost models."""
    node = cfg.get("cost_model") if cfg is not None else None
    return node if node is not None and node.get("path") else None


def _upgrade(cfg: dict) -> dict:
    """A config.yaml written by an older `red`, in today's layout: mode knobs moved from
    ``redistribution.<knob>`` to ``redistribution.<mode>.<knob>``, keys since removed dropped,
    groups added since given the choice that behaves as the run did."""
    red = cfg.get("redistribution")
    if isinstance(red, dict) and "mode" in red:
        flat = {k: v for k, v in red.items() if k != "mode" and not isinstance(v, dict)}
        for key in flat:
            del red[key]
        if flat:
            red.setdefault(red["mode"], {}).update(flat)
    for group in ("policy", "dataset"):
        if isinstance(cfg.get(group), dict):
            cfg[group].pop("name", None)
    # Runs from before generation backends sampled with transformers' generate.
    cfg.setdefault("generation", {"backend": "hf"})
    return cfg


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
    import torch
    import transformers

    from red_cli.runtime import quiet_native_output

    with quiet_native_output("importing DeepSpeed"):
        import deepspeed

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


# run.json is written at this size (padded with spaces) from the start, so that a status can
# still be overwritten in place when the disk is full and no new block can be allocated.
STATUS_BYTES = 4096
STATUSES = ("running", "complete", "failed", "interrupted")


def fsync_path(path: Path) -> None:
    """Flush a file's (or a directory's entries') data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` so that a crash leaves the old or the new file, never half
    of one: a temp file, fsync'd, renamed over it, the directory fsync'd."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    fsync_path(path.parent)


def write_status(run_dir: Path, status: str, **extra) -> None:
    """Record the run's status (and why) in run.json, even on a full disk."""
    payload = {"status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra}
    text = json.dumps(payload, indent=2) + "\n"
    if len(text.encode()) > STATUS_BYTES:  # a long error message: keep its start
        payload["error"] = str(payload.get("error", ""))[:STATUS_BYTES // 2] + " [...]"
        text = json.dumps(payload, indent=2) + "\n"
    data = text.encode().ljust(STATUS_BYTES)
    path = run_dir / "run.json"
    try:
        write_atomic(path, data)
    except OSError as err:
        if err.errno != errno.ENOSPC or not path.exists():
            raise
        # No room for a new file: overwrite the pre-allocated one's blocks in place.
        with open(path, "r+b") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def read_run_json(run_dir: Path) -> dict:
    """run.json as a dict ({} when missing or unreadable)."""
    try:
        out = json.loads((Path(run_dir) / "run.json").read_text())
    except (OSError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


def read_status(run_dir: Path) -> str | None:
    return read_run_json(run_dir).get("status")


def save_config(run_dir: Path, frozen: DictConfig) -> None:
    """config.yaml, written atomically (a resume may change a few keys of it)."""
    write_atomic(Path(run_dir) / "config.yaml", OmegaConf.to_yaml(frozen).encode())


def create(run_dir: Path, frozen: DictConfig, overrides: list[str]) -> None:
    """Write config.yaml, environment.txt and run.json (with the command-line overrides,
    which `red report` groups runs by)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(run_dir, frozen)
    (run_dir / "environment.txt").write_text(environment_text())
    (run_dir / "overrides.json").write_text(json.dumps(list(overrides)) + "\n")
    write_status(run_dir, "running")


def last_checkpoint_iteration(run_dir: Path) -> int | None:
    """The iteration the `latest` checkpoint was saved after, or None."""
    try:
        name = (Path(run_dir) / "checkpoints" / "latest").read_text().strip()
        return int(name.removeprefix("iter_"))
    except (OSError, ValueError):
        return None


def resumable_problem(run_dir: Path, iterations: int | None = None) -> str | None:
    """Why ``run_dir`` cannot be resumed (to ``iterations`` in all), or None if it can. A run
    stopped before its first checkpoint resumes from iteration 0 (nothing of it was kept)."""
    if not run_dir.is_dir():
        return "no such directory"
    if not (run_dir / "config.yaml").is_file():
        return "not a red run directory (no config.yaml)"
    last = last_checkpoint_iteration(run_dir)
    if read_status(run_dir) == "complete" and (iterations is None or last is None
                                                 or iterations <= last + 1):
        return ("that run already finished (start a new one, or raise ppo.iterations to go on: "
                f"red train resume={run_dir} ppo.iterations=N)")
    return None


def read_overrides(run_dir: Path) -> list[str] | None:
    """The command-line overrides the run was started with; None for a run without the file."""
    path = run_dir / "overrides.json"
    return list(json.loads(path.read_text())) if path.exists() else None


def read_metrics(path: Path) -> list[dict]:
    """The rows of a metrics.jsonl (``run_dir / "metrics.jsonl"``), in logged order.

    A last line cut short (a kill or a full disk while appending) is dropped with a warning;
    a broken line elsewhere is an error naming it.
    """
    if not path.exists():
        return []
    lines = path.read_bytes().decode("utf-8", "replace").split("\n")
    rows = []
    for k, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            if any(rest.strip() for rest in lines[k + 1:]):
                raise UserError(f"{path}: line {k + 1} is not JSON; it was written by something "
                                "other than red, or edited") from None
            log.warning("%s: dropped an unfinished last line (the run was stopped while "
                        "writing it)", path)
    return rows


def is_run_dir(path: Path) -> bool:
    return (Path(path) / "config.yaml").is_file()


def find_runs(paths: Sequence[str], key: str = "runs") -> list[Path]:
    """Run directories among ``paths``: each is a run (has config.yaml) or holds runs."""
    found: list[Path] = []
    for p in paths:
        path = Path(p).expanduser()
        if not path.is_dir():
            raise UserError(f"{key}: {p!r} is not a directory")
        if is_run_dir(path):
            found.append(path.resolve())
            continue
        inside = sorted(d.resolve() for d in path.iterdir() if is_run_dir(d))
        if not inside:
            raise UserError(f"{key}: {p!r} is neither a run directory (no config.yaml) nor a "
                            "multirun directory holding runs")
        found.extend(inside)
    return list(dict.fromkeys(found))


@dataclass
class RunInfo:
    """A `red train` run directory and its frozen config."""

    dir: Path
    cfg: DictConfig


def load_run(path: str) -> RunInfo | None:
    """The run at ``path``, or None if ``path`` is not a run directory (no config.yaml)."""
    run_dir = Path(path).expanduser()
    if not is_run_dir(run_dir):
        return None
    return RunInfo(run_dir.resolve(), load_frozen(run_dir))


def final_policy(run_dir: Path, key: str = "run") -> Path:
    """The trained policy of a finished run (a plain Hugging Face folder)."""
    path = Path(run_dir) / "checkpoints" / "final_policy"
    if not (path / "config.json").is_file():
        raise UserError(f"{key}={str(run_dir)!r}: no trained policy at checkpoints/final_policy "
                        f"(run status: {read_status(Path(run_dir)) or 'unknown'})")
    return path


def run_guarded(run_dir: Path, work: Callable[[], object]) -> None:
    """Run ``work`` and record in run.json whether it completed, failed or was interrupted
    (and why)."""
    write_status(run_dir, "running")
    try:
        work()
    except (KeyboardInterrupt, Interrupted) as err:
        write_status(run_dir, "interrupted", error=str(err) or "interrupted")
        raise
    except BaseException as err:
        why = str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
        write_status(run_dir, "failed", error=why)
        raise
    write_status(run_dir, "complete")
