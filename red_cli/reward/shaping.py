"""Sequence-score shaping before redistribution: normalise, clip, penalise a missing EOS.

Never per token: a per-token transform would break the redistribution invariants (each mode's
rewards sum to its target). The same affine-then-clip map is applied to every reading of a
batch (score, prefix scores, R(x)), so td's differences stay differences of one potential.
"""

from __future__ import annotations

import torch

from red_cli import runtime


class ScoreShaper:
    """One affine-then-clip map applied to every RM reading of a batch (score, prefix scores,
    R(x)), so td's differences stay differences of one potential; then the missing-EOS
    penalty on the final score only.

    norm: `none`; `batch` (mean/std of this iteration's scores over all ranks); `running`
    (mean/std of every score seen so far, Welford/Chan merge, saved in checkpoints).
    """

    def __init__(self, norm: str, clip: float | None, missing_eos_penalty: float | None):
        self.norm, self.clip, self.penalty = norm, clip, missing_eos_penalty
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def fit(self, scores: torch.Tensor, world_size: int) -> tuple[float, float]:
        """Update statistics with this batch (all ranks) and return (shift, scale)."""
        if self.norm == "none":
            return 0.0, 1.0
        gathered = torch.cat([torch.as_tensor(s) for s in
                              runtime.gather_objects(scores.detach().double().cpu(), world_size)])
        n, mean = gathered.numel(), gathered.mean().item()
        m2 = ((gathered - mean) ** 2).sum().item()
        if self.norm == "batch":
            return mean, max((m2 / max(n - 1, 1)) ** 0.5, 1e-6)
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta**2 * self.count * n / total
        self.count = total
        return self.mean, max((self.m2 / max(total - 1, 1)) ** 0.5, 1e-6)

    def transform(self, x: torch.Tensor, shift: float, scale: float) -> torch.Tensor:
        x = (x - shift) / scale
        return x.clamp(-self.clip, self.clip) if self.clip is not None else x

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict) -> None:
        self.count, self.mean, self.m2 = state["count"], state["mean"], state["m2"]
