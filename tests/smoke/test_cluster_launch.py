"""Sweeps through Hydra's submitit launcher: the `red_slurm` preset composes, and the same
launcher's local executor runs a real sweep in which every job is a plain `red train`."""

from __future__ import annotations

import json

import pytest

from tests.smoke.conftest import QUICK, red

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")


def test_red_slurm_preset_composes(tmp_path):
    out = red("train", "-m", "hydra/launcher=red_slurm", "hydra.launcher.partition=gpu",
              "launcher.nproc_per_node=8", "seed=0,1", "--cfg", "hydra", cwd=tmp_path).stdout
    assert "SlurmLauncher" in out
    for line in ("partition: gpu", "tasks_per_node: 1", "gpus_per_node: 8", "timeout_min: 720"):
        assert line in out, line
    # Printing configs starts no job and leaves no directory behind.
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()


def test_submitit_sweep_runs_each_job_as_red_train(tiny_toy, tmp_path):
    sweep = tmp_path / "sweep"
    red("train", "-m", "hydra/launcher=submitit_local", *QUICK, "ppo.iterations=2",
        "redistribution=sparse,td", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    runs = sorted(d for d in sweep.iterdir() if (d / "config.yaml").is_file())
    assert len(runs) == 2
    modes = set()
    for run in runs:
        assert json.loads((run / "run.json").read_text())["status"] == "complete"
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert [r["iteration"] for r in rows] == [0, 1]
        modes.update(o for o in json.loads((run / "overrides.json").read_text())
                     if o.startswith("redistribution="))
        assert (run / "checkpoints" / "final_policy").is_dir()
    assert modes == {"redistribution=sparse", "redistribution=td"}
