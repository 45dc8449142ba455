"""PPO-Lagrangian (Safe RLHF, Dai et al., arXiv 2310.12773; safe-rlhf's ``ppo_lag``).

Constrained objective: maximise E[R] subject to E[C] <= d (the cost limit), relaxed to the
Lagrangian E[R] - lambda * (E[C] - d) with a multiplier lambda >= 0 that the policy descends
and the multiplier ascends:

- the policy trains on the combined advantage ``(A_r - lambda * A_c) / (1 + lambda)``: the
  reward's and the cost's advantages, each from its own per-token signal (and its own critic
  under GAE); dividing by 1 + lambda keeps the advantage's scale, and so PPO's clipping and
  learning rate, the same whatever lambda is;
- lambda takes one SGD step on ``log lambda`` for the loss ``-(mean episode cost - d) *
  lambda``, i.e. ``log lambda += lr * lambda * (mean cost - d)``, capped at ``log lambda_max``:
  it grows while the policy's mean cost is over the limit and shrinks while it is under;
- the mean episode cost is taken over a window of the most recent episodes (all ranks), which
  smooths one batch's noise.

``lambda = 0`` is a fixed point of that update: a run started with ``lambda_init = 0`` keeps
lambda at 0, trains on the reward's advantage alone and still measures the cost (the
unconstrained control).

Shapes: b batch, T response length.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

import torch

_MAX_LOG = 700.0  # exp(709) is the largest float64


def lagrange_step(lam: float, mean_cost: float, limit: float, lr: float,
                  lam_max: float | None = None) -> float:
    """The multiplier after one ascent step on ``log lambda`` (safe-rlhf's update).

    ``log lambda' = log lambda + lr * lambda * (mean_cost - limit)``, then at most
    ``log lam_max``. ``lam`` 0 stays 0. Returns a float >= 0.
    """
    if lam < 0:
        raise ValueError(f"the Lagrange multiplier must be >= 0, got {lam}")
    if lam == 0.0:
        return 0.0
    log_new = math.log(lam) + lr * lam * (mean_cost - limit)
    if lam_max is not None:
        log_new = min(log_new, math.log(lam_max))
    return math.exp(min(log_new, _MAX_LOG))


def combine_advantages(reward_advantages: torch.Tensor, cost_advantages: torch.Tensor,
                       lam: float) -> torch.Tensor:
    """``(A_r - lambda * A_c) / (1 + lambda)``, [b, T] (0 where both inputs are 0)."""
    return (reward_advantages - lam * cost_advantages) / (1.0 + lam)


class CostWindow:
    """The costs of the last ``size`` episodes, oldest dropped first; their mean feeds
    :func:`lagrange_step`. Saved in checkpoints, so a resumed run continues exactly."""

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"the cost window needs size >= 1, got {size}")
        self.costs: deque[float] = deque(maxlen=size)

    def extend(self, costs: Iterable[float]) -> None:
        self.costs.extend(float(c) for c in costs)

    def mean(self) -> float:
        if not self.costs:
            raise ValueError("no episode cost seen yet")
        return math.fsum(self.costs) / len(self.costs)

    def state_dict(self) -> dict:
        return {"costs": list(self.costs)}

    def load_state_dict(self, state: dict) -> None:
        self.costs.clear()
        self.costs.extend(state["costs"])


class Lagrangian:
    """The multiplier and its window: ``observe`` this iteration's episode costs (all ranks,
    in rank order), then ``step`` once it is ``update_delay`` iterations in.

    Every rank holds the same costs and does the same float arithmetic, so lambda agrees on
    every rank without a broadcast.
    """

    def __init__(self, limit: float, lambda_init: float, lr: float,
                 lambda_max: float | None, window: int, update_delay: int = 0):
        self.limit, self.lr, self.lambda_max = float(limit), float(lr), lambda_max
        self.update_delay = int(update_delay)
        self.value = float(lambda_init)
        self.window = CostWindow(window)

    def update(self, iteration: int, episode_costs: Iterable[float]) -> float:
        """Add this iteration's costs to the window and, from ``update_delay`` on, take one
        step. Returns the window's mean cost (what the step compared with the limit)."""
        self.window.extend(episode_costs)
        mean = self.window.mean()
        if iteration >= self.update_delay:
            self.value = lagrange_step(self.value, mean, self.limit, self.lr, self.lambda_max)
        return mean

    def state_dict(self) -> dict:
        return {"value": self.value, "window": self.window.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])
        self.window.load_state_dict(state["window"])
