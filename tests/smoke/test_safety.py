"""PPO-Lagrangian end to end on the tiny toy world: a cost model read and redistributed like
the reward model, its own critic, the multiplier's update as logged, exact resume, and a
lambda held at 0 that trains exactly like no cost model at all.

The cost model is the tiny toy safety world's (`toy=tiny toy.cost_model_steps=20`, the world
of tests/unit/test_toy_cost.py: the tiny world's files plus a small cost model).
"""

from __future__ import annotations

import json
import math

import torch

from red_cli import runs
from red_cli.rlhf.lagrangian import lagrange_step
from red_cli.runs import read_metrics
from tests.smoke.conftest import QUICK, red

COST = ["cost_model=toy", "toy.cost_model_steps=20", "ppo.lagrangian.cost_limit=0.2",
        "ppo.lagrangian.lambda_lr=0.5", "ppo.lagrangian.cost_window=12"]
TIMING = ("time/", "throughput/")


def _without_timings(metrics: list[dict], keys=None) -> list[dict]:
    return [{k: v for k, v in m.items() if not k.startswith(TIMING) and (keys is None or k in keys)}
            for m in metrics]


def test_cost_model_trains_resumes_exactly_and_lambda_follows_the_rule(tiny_toy, tmp_path):
    args = [*QUICK, *COST, "redistribution=abc", "checkpoint_every=1", "sample_every=1"]
    red("train", *args, "ppo.iterations=4", "hydra.run.dir=straight", cwd=tmp_path)
    red("train", *args, "ppo.iterations=2", "hydra.run.dir=resumed", cwd=tmp_path)
    red("train", "resume=resumed", "ppo.iterations=4", cwd=tmp_path)
    run = tmp_path / "straight"
    metrics = read_metrics(run / "metrics.jsonl")
    assert _without_timings(metrics) == _without_timings(
        read_metrics(tmp_path / "resumed" / "metrics.jsonl"))
    assert runs.read_status(tmp_path / "resumed") == "complete"
    lam = 1.0
    for m in metrics:
        assert all(math.isfinite(v) for v in m.values())
        for key in ("objective/cost", "objective/gold_cost", "ppo/loss/cost_value",
                    "ppo/cost_val/mean", "lagrange/lambda", "lagrange/episode_cost"):
            assert key in m, key
        # abc's costs sum to their target, like its rewards (PAPERS.md invariant 2).
        assert m["costs/sum_minus_score"] < 1e-4
        # One ascent step on log lambda per iteration, from the window's mean cost, before
        # this iteration's advantages use it.
        lam = lagrange_step(lam, m["lagrange/episode_cost"], 0.2, 0.5, 5.0)
        assert m["lagrange/lambda"] == lam
        rows = [json.loads(line) for line in
                (run / "samples" / f"iter_{m['iteration']}.jsonl").read_text().splitlines()]
        assert all(len(r["costs"]) == len(r["tokens"]) and "gold_cost" in r for r in rows)
    # The first window holds the first iteration's 8 episodes: its mean is their mean cost;
    # later windows hold the last 12 episodes, so they differ from the batch's mean.
    assert math.isclose(metrics[0]["lagrange/episode_cost"], metrics[0]["objective/cost"],
                        rel_tol=1e-6)
    assert not math.isclose(metrics[1]["lagrange/episode_cost"], metrics[1]["objective/cost"],
                            rel_tol=1e-6)
    ckpt = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    assert (ckpt / "cost_critic").is_dir() and (ckpt / "critic").is_dir()
    state = torch.load(ckpt / "trainer_state.pt", weights_only=False)
    assert state["lagrangian"]["value"] == metrics[-1]["lagrange/lambda"]
    assert len(state["lagrangian"]["window"]["costs"]) == 12


def test_lambda_zero_trains_exactly_like_no_cost_model(tiny_toy, tmp_path):
    """The unconstrained control: same models, the cost measured, lambda held at 0."""
    args = [*QUICK, "redistribution=td", "ppo.iterations=3"]
    red("train", *args, "hydra.run.dir=plain", cwd=tmp_path)
    red("train", *args, *COST, "ppo.lagrangian.lambda_init=0", "hydra.run.dir=control",
        cwd=tmp_path)
    plain = read_metrics(tmp_path / "plain" / "metrics.jsonl")
    control = read_metrics(tmp_path / "control" / "metrics.jsonl")
    assert all(m["lagrange/lambda"] == 0.0 for m in control)
    assert _without_timings(plain) == _without_timings(control, keys=plain[0].keys())
