"""Ranks stay in sync under ZeRO 0/1/2/3, a SIGKILLed run resumes exactly, sweeps make one
directory per job. Each test starts the real `red` command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from red_cli import runs
from red_cli.runs import read_metrics
from tests.smoke.conftest import QUICK, red

# Wall-clock measurements differ between any two runs; everything else must not.
NONDETERMINISTIC = ("time/", "throughput/")


def _comparable(metrics):
    return [{k: v for k, v in m.items() if not k.startswith(NONDETERMINISTIC)} for m in metrics]


# ZeRO-3 runs on CPU too: weights gathered once per rollout for generate (tests/smoke/test_lora.py
# covers it with adapters and gradient checkpointing).
@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_two_ranks_stay_in_sync(tiny_toy, tmp_path, stage):
    red("train", *QUICK, f"deepspeed=zero{stage}", "launcher.nproc_per_node=2",
        "ppo.iterations=2", "hydra.run.dir=run", cwd=tmp_path)
    run = tmp_path / "run"
    assert runs.read_status(run) == "complete"
    assert [p.name for p in tmp_path.iterdir()] == ["run"], "one run directory for both ranks"
    sums = json.loads((run / "rank_checksums.json").read_text())
    for name in ("policy", "critic"):
        assert len(sums[name]) == 2 and sums[name][0] == sums[name][1], sums
    assert len(read_metrics(run / "metrics.jsonl")) == 2


def test_sigkill_then_resume_matches_uninterrupted(tiny_toy, tmp_path):
    args = [*QUICK, "ppo.iterations=5", "checkpoint_every=1", "redistribution=td"]
    red("train", *args, "hydra.run.dir=straight", cwd=tmp_path)

    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    proc = subprocess.Popen([sys.executable, "-m", "red_cli", "train", *args, "hydra.run.dir=killed"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    latest = tmp_path / "killed" / "checkpoints" / "latest"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if latest.exists() and latest.read_text().strip() in ("iter_1", "iter_2"):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert runs.read_status(tmp_path / "killed") == "running"  # not passed off as complete

    red("train", "resume=killed", cwd=tmp_path)
    assert runs.read_status(tmp_path / "killed") == "complete"
    straight = _comparable(read_metrics(tmp_path / "straight" / "metrics.jsonl"))
    resumed = _comparable(read_metrics(tmp_path / "killed" / "metrics.jsonl"))
    assert [m["iteration"] for m in resumed] == [0, 1, 2, 3, 4]
    assert resumed == straight


def _dirs(root):
    return {p for p in root.rglob("*") if p.is_dir()}


def test_resume_refuses_a_finished_run(tiny_toy, tmp_path):
    red("train", *QUICK, "ppo.iterations=1", cwd=tmp_path)
    [run] = [p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir()]
    assert runs.read_status(run) == "complete"
    before, metrics = _dirs(tmp_path), (run / "metrics.jsonl").read_text()

    # As typed: the directory's name holds `=` and `,` (Hydra's grammar would reject them
    # unquoted; red quotes path keys itself).
    assert "=" in run.name and "," in run.name
    proc = red("train", f"resume={run}", cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "already finished" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert _dirs(tmp_path) == before, "a refused resume leaves no run directory behind"
    assert runs.read_status(run) == "complete"
    assert (run / "metrics.jsonl").read_text() == metrics


def test_resume_refuses_a_missing_directory(tiny_toy, tmp_path):
    proc = red("train", "resume=nowhere", cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "resume=nowhere: no such directory" in proc.stderr
    assert not any(tmp_path.iterdir()), "a refused resume leaves no run directory behind"


def test_multirun_sweep_one_dir_per_job(tiny_toy, tmp_path):
    red("train", "-m", *QUICK, "ppo.iterations=1", "redistribution=sparse,td", "seed=0,1",
        cwd=tmp_path)
    jobs = sorted(p for p in (tmp_path / "outputs" / "multirun").glob("*/*/*") if p.is_dir())
    assert len(jobs) == 4
    for job in jobs:
        assert runs.read_status(job) == "complete"
        assert (job / ".hydra" / "overrides.yaml").exists() and (job / "train.log").exists()
    modes = sorted(json.dumps(runs.read_overrides(j)) for j in jobs)
    assert len(set(modes)) == 4
    # Names: the job number, then mode and seed; wandb shows the same name, grouped by sweep.
    names = {j.name.split("_", 1)[1].split("_experiment")[0] for j in jobs}
    assert names == {"sparse_s0", "sparse_s1", "td_s0", "td_s1"}, names
    import yaml

    loggers = [yaml.safe_load((j / "config.yaml").read_text())["logger"] for j in jobs]
    assert [lg["name"] for lg in loggers] == [j.name for j in jobs]
    sweep = jobs[0].parent
    assert {lg["group"] for lg in loggers} == {f"sweep {sweep.parent.name}/{sweep.name}"}


@pytest.mark.slow
def test_full_mode_sweep_two_seeds(tiny_toy, tmp_path):
    """Acceptance: `red train -m redistribution=sparse,td,abc,uniform seed=0,1` (8 jobs)."""
    red("train", "-m", *QUICK, "redistribution=sparse,td,abc,uniform", "seed=0,1", cwd=tmp_path,
        timeout=1800)
    jobs = [p for p in (tmp_path / "outputs" / "multirun").glob("*/*/*") if p.is_dir()]
    assert len(jobs) == 8 and all(runs.read_status(j) == "complete" for j in jobs)
