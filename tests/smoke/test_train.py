"""End to end on the reduced toy world: every mode and RM variant trains, weights move,
the redistribution invariant holds, and the real `red train` command writes a whole run."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from safetensors.torch import load_file

from red_cli import runs
from red_cli.runs import read_metrics
from tests.smoke.conftest import QUICK, compose_train, red

CASES = [("sparse", "toy"), ("td", "toy"), ("abc", "toy"), ("uniform", "toy"),
         ("td", "toy_xtok"), ("abc", "toy_xtok"), ("td", "toy_bidir")]


def yaml_load(path):
    return yaml.safe_load(path.read_text())


def _weights(folder):
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.parametrize("mode,rm", CASES)
def test_mode_trains_end_to_end(tiny_toy, tmp_path, mode, rm):
    from red_cli.train.loop import train

    cfg = compose_train([*QUICK, f"redistribution={mode}", f"reward_model={rm}",
                         "ppo.iterations=2", "checkpoint_every=1", "sample_every=1"], tmp_path)
    runs.create(tmp_path, cfg, [])
    last = train(cfg, tmp_path)

    metrics = read_metrics(tmp_path / "metrics.jsonl")
    assert [m["iteration"] for m in metrics] == [0, 1]
    for m in metrics:
        for key in ("objective/score", "objective/kl", "objective/gold", "ppo/loss/policy",
                    "ppo/loss/value", "ppo/policy/clipfrac", "ppo/policy/entropy",
                    "time/rollout", "time/score", "time/update", "throughput/tokens_per_s"):
            assert math.isfinite(m[key]), (key, m[key])
        # PAPERS.md invariant 2, through alignment and score shaping: sum_t r_t == target.
        assert m["rewards/sum_minus_score"] < 1e-4
    assert last["objective/score"] == metrics[-1]["objective/score"]

    # The policy moved away from the SFT weights it started from.
    before, after = _weights(tiny_toy.policy), _weights(tmp_path / "checkpoints" / "final_policy")
    moved = [k for k in before if k in after and not torch.equal(before[k], after[k])]
    assert len(moved) > len(before) // 2

    # The critic moved away from its initial weights.
    ckpt = tmp_path / "checkpoints" / (tmp_path / "checkpoints" / "latest").read_text().strip()
    critic = torch.load(ckpt / "critic" / "mp_rank_00_model_states.pt", weights_only=False)["module"]
    init = _weights(tiny_toy.reward_models[rm]) if rm == "toy" else None
    if init is not None:
        rm_backbone = {k.split(".", 1)[1]: v for k, v in init.items() if k.startswith("transformer.")}
        crit_backbone = {k.split(".", 1)[1]: v for k, v in critic.items() if k.startswith("backbone.")}
        changed = [k for k in rm_backbone if not torch.equal(rm_backbone[k], crit_backbone[k])]
        assert changed, "critic backbone did not change"
    assert all(torch.isfinite(v).all() for v in critic.values())

    sample = json.loads((tmp_path / "samples" / "iter_1.jsonl").read_text().splitlines()[0])
    assert len(sample["rewards"]) == len(sample["tokens"])


def test_red_train_command(tiny_toy, tmp_path):
    """The real CLI in a subprocess: one run directory, complete, with every artifact, named
    mode and seed first, and a terminal that says only what matters."""
    proc = red("train", *QUICK, "redistribution=abc", "seed=3", cwd=tmp_path)
    found = [p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir()]
    assert len(found) == 1
    run = found[0]
    assert runs.read_status(run) == "complete"
    assert run.name.split("_", 1)[1].startswith("abc_s3_"), run.name
    for name in ("config.yaml", "environment.txt", "metrics.jsonl", "plots/curves.png",
                 "checkpoints/latest", "checkpoints/final_policy/model.safetensors",
                 ".hydra/config.yaml", ".hydra/overrides.yaml", ".hydra/hydra.yaml", "train.log"):
        assert (run / name).exists(), name
    assert len(read_metrics(run / "metrics.jsonl")) == 3
    assert "torch:" in (run / "environment.txt").read_text()
    log = (run / "train.log").read_text()
    assert f"run {run}" in log and "iter 2" in log
    # The closing summary: the final numbers, where the run is, what to run next.
    assert "red train: done, 3 iterations" in proc.stdout and f"red eval {run}" in proc.stdout
    # DeepSpeed's compiler probes and accelerator notes stay out of the terminal.
    for noise in ("gcc ", "-laio", "ds_accelerator", "shm_comm_op built"):
        assert noise not in proc.stdout + proc.stderr, noise
    assert yaml_load(run / "config.yaml")["logger"]["name"] == run.name


def test_config_error_leaves_no_run_dir(tmp_path):
    proc = red("train", "ppo.cliprange=-1", cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "ppo.cliprange" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "outputs").exists()


def test_red_toy_command_prints_summary(tiny_toy, tmp_path):
    proc = red("toy", "toy=tiny", "json=true", cwd=tmp_path)
    summary = json.loads(proc.stdout)
    assert set(summary["reward_models"]) == {"toy", "toy_xtok", "toy_bidir"}
    assert summary["paths"]["toy:policy"] == str(tiny_toy.policy)
    assert not any(tmp_path.iterdir()), "red toy writes nothing into the working directory"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_first_kl_is_zero_in_every_precision(tiny_toy, tmp_path, precision):
    """Before any step the policy is the reference, so the KL is 0, also when DeepSpeed casts
    the float32 policy to bf16 (the reference computes in the type the policy trains in)."""
    from red_cli.train.loop import train

    cfg = compose_train([*QUICK, "ppo.iterations=1", f"deepspeed.precision={precision}"], tmp_path)
    runs.create(tmp_path, cfg, [])
    train(cfg, tmp_path)
    first = read_metrics(tmp_path / "metrics.jsonl")[0]
    assert first["objective/kl"] == 0.0
