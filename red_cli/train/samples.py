"""samples/iter_N.jsonl: what the policy wrote, what it was paid, token by token."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from red_cli import runtime


def write_samples(run_dir: Path, iteration: int, traj, scored, credit, token_rewards: torch.Tensor,
                  gold: torch.Tensor | None, tokenizer, dist, limit: int = 16,
                  costs: tuple | None = None) -> None:
    """Rank 0 writes up to ``limit`` samples gathered from all ranks. ``costs``: (the cost
    model's Scored, its per-token Credit, gold costs or None) with a cost model."""
    rows = []
    for i in range(min(limit, len(traj.prompts))):
        real = traj.response_mask[i]
        ids = traj.response_ids[i][real].tolist()
        rows.append({
            "prompt": traj.prompts[i],
            "response": traj.responses[i],
            "score": scored.raw_scores[i].item(),
            "gold": None if gold is None else gold[i].item(),
            "tokens": tokenizer.convert_ids_to_tokens(ids),
            "rewards": credit.rewards[i][real].tolist(),
            "rewards_with_kl": token_rewards[i][real].tolist(),
        })
        if costs is not None:
            cost_scored, cost_credit, gold_cost = costs
            rows[-1].update({"cost": cost_scored.raw_scores[i].item(),
                             "gold_cost": None if gold_cost is None else gold_cost[i].item(),
                             "costs": cost_credit.rewards[i][real].tolist()})
    everything = [r for part in runtime.gather_objects(rows, dist.world_size) for r in part]
    if dist.is_main:
        out = run_dir / "samples" / f"iter_{iteration}.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps(r) + "\n" for r in everything[:limit]))
