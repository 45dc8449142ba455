"""Every estimator trains end to end on the tiny toy world with sparse and (where it accepts
one) a dense mode; critic-free ones build no critic; REINFORCE++ resumes exactly."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from red_cli import runs
from red_cli.runs import read_metrics
from tests.smoke.conftest import QUICK, compose_train, red

CASES = [("reinforce_pp", "sparse", 1), ("reinforce_pp", "td", 1), ("rloo", "sparse", 2),
         ("grpo", "sparse", 4), ("gae", "td", 2)]


@pytest.mark.parametrize("estimator,mode,k", CASES)
def test_estimator_trains(tiny_toy, tmp_path, estimator, mode, k):
    from red_cli.train.loop import train

    cfg = compose_train([*QUICK, f"ppo.estimator={estimator}", f"redistribution={mode}",
                         f"ppo.samples_per_prompt={k}", "ppo.iterations=2",
                         "checkpoint_every=1"], tmp_path)
    runs.create(tmp_path, cfg, [])
    train(cfg, tmp_path)
    metrics = read_metrics(tmp_path / "metrics.jsonl")
    assert [m["iteration"] for m in metrics] == [0, 1]
    critic = estimator == "gae"
    for m in metrics:
        assert all(math.isfinite(v) for v in m.values())
        assert ("ppo/loss/value" in m) == critic and ("ppo/val/mean" in m) == critic
        assert ("ppo/policy/kl_loss" in m) == (estimator == "grpo")
        assert m["rewards/sum_minus_score"] < 1e-4
    ckpt = tmp_path / "checkpoints" / (tmp_path / "checkpoints" / "latest").read_text().strip()
    assert (ckpt / "critic").exists() == critic, "no critic engine, no critic checkpoint"
    before = load_file(str(tiny_toy.policy / "model.safetensors"))
    after = load_file(str(tmp_path / "checkpoints" / "final_policy" / "model.safetensors"))
    assert sum(not torch.equal(before[n], after[n]) for n in before) > len(before) // 2
    if k > 1:  # each prompt answered k times, in consecutive rows
        import json

        rows = [json.loads(line) for line in (tmp_path / "samples" / "iter_1.jsonl").read_text()
                .splitlines()]
        assert all(rows[i]["prompt"] == rows[i - i % k]["prompt"] for i in range(len(rows)))


def test_reinforce_pp_resumes_exactly(tiny_toy, tmp_path):
    args = [*QUICK, "ppo.estimator=reinforce_pp", "redistribution=td", "checkpoint_every=1"]
    red("train", *args, "ppo.iterations=4", "hydra.run.dir=straight", cwd=tmp_path)
    red("train", *args, "ppo.iterations=2", "hydra.run.dir=resumed", cwd=tmp_path)
    # A finished run goes on when a resume raises ppo.iterations.
    red("train", "resume=resumed", "ppo.iterations=4", cwd=tmp_path)
    keep = ("time/", "throughput/")
    a, b = (read_metrics(tmp_path / d / "metrics.jsonl") for d in ("straight", "resumed"))
    assert [{k: v for k, v in m.items() if not k.startswith(keep)} for m in a] == \
        [{k: v for k, v in m.items() if not k.startswith(keep)} for m in b]
    assert runs.read_status(tmp_path / "resumed") == "complete"
