"""Two ranks and their launcher under faults: Ctrl-C stops both after the same iteration with a
checkpoint; a rank that dies marks the run failed; killing `red` (even SIGKILL) leaves no rank
running. Slow (two ranks start three times): `pytest -m slow`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from red_cli import runs
from red_cli.runs import read_metrics
from tests.smoke.conftest import QUICK

pytestmark = pytest.mark.slow
ARGS = [*QUICK, "launcher.nproc_per_node=2", "ppo.iterations=40", "checkpoint_every=100",
        "hydra.run.dir=run"]


def _start(tmp_path, *extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    return subprocess.Popen([sys.executable, "-m", "red_cli", "train", *ARGS, *extra],
                            cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)


def _wait_for_iterations(tmp_path, proc, n):
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= n:
            return
        time.sleep(0.1)
    raise AssertionError(f"no {n} iterations: {proc.poll()}")


def _workers(run_dir) -> list[int]:
    """PIDs of the rank processes (not torchrun, whose command line names the worker too)."""
    out = subprocess.run(["pgrep", "-af", f"red_cli.train.worker --run-dir {run_dir}"],
                         capture_output=True, text=True)
    return [int(line.split()[0]) for line in out.stdout.splitlines()
            if "torch.distributed.run" not in line]


def test_ctrl_c_stops_both_ranks_after_a_checkpoint(tiny_toy, tmp_path):
    proc = _start(tmp_path)
    _wait_for_iterations(tmp_path, proc, 2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "interrupted after iteration" in err, err[-3000:]
    run = tmp_path / "run"
    assert runs.read_status(run) == "interrupted"
    done = len(read_metrics(run / "metrics.jsonl"))
    assert runs.last_checkpoint_iteration(run) == done - 1
    assert not _workers(run)


def test_a_dead_rank_marks_the_run_failed(tiny_toy, tmp_path):
    proc = _start(tmp_path)
    _wait_for_iterations(tmp_path, proc, 1)
    ranks = _workers(tmp_path / "run")
    assert len(ranks) == 2
    os.kill(ranks[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode != 0 and "Traceback" not in err.split("red train:")[-1]
    info = runs.read_run_json(tmp_path / "run")
    assert info["status"] == "failed" and info.get("error"), info


def test_killing_red_leaves_no_rank_running(tiny_toy, tmp_path):
    proc = _start(tmp_path)
    _wait_for_iterations(tmp_path, proc, 1)
    assert _workers(tmp_path / "run")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 60
    while time.time() < deadline and _workers(tmp_path / "run"):
        time.sleep(0.5)
    assert not _workers(tmp_path / "run"), "ranks outlived the red that started them"
