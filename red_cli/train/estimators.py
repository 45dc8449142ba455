"""Advantage estimators: how per-token rewards (KL included) become PPO advantages.

An estimator is chosen by ``ppo.estimator`` and built once at setup. It says whether it
needs a critic (when it does not, no critic engine is built, no value loss is computed) and
maps (rewards, values, mask) to advantages and, with a critic, its regression targets. The
maths lives in ``red_cli.rlhf``; this module only wires it to the config.

Shapes: b batch, T response length; ``response_mask`` [b, T] bool.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import torch

from red_cli.rlhf.gae import compute_gae
from red_cli.rlhf.masking import masked_whiten


class Advantages(NamedTuple):
    advantages: torch.Tensor
    """[b, T] what the policy loss weighs each token's log-ratio by; 0 outside the mask."""
    returns: torch.Tensor | None
    """[b, T] the critic's regression target, or None without a critic."""


class Estimator(Protocol):
    """needs_critic: whether ``values`` are needed (and a critic is trained on ``returns``)."""

    name: str
    needs_critic: bool

    def __call__(self, rewards: torch.Tensor, values: torch.Tensor | None,
                 response_mask: torch.Tensor) -> Advantages: ...


class GAE:
    """GAE(gamma, lambda) with a critic (Schulman et al. 2016), whitened over the batch when
    ``whiten`` (``ppo.whiten_advantages``): the estimator of TRL's and OpenRLHF's PPO."""

    name = "gae"
    needs_critic = True

    def __init__(self, gamma: float, gae_lambda: float, whiten: bool):
        self.gamma, self.gae_lambda, self.whiten = gamma, gae_lambda, whiten

    def __call__(self, rewards: torch.Tensor, values: torch.Tensor | None,
                 response_mask: torch.Tensor) -> Advantages:
        advantages, returns = compute_gae(rewards, values, response_mask, self.gamma,
                                          self.gae_lambda)
        if self.whiten:
            advantages = masked_whiten(advantages, response_mask)
        return Advantages(advantages, returns)


# ppo.estimator -> a builder from the ppo config node.
ESTIMATORS: dict[str, Callable[[Any], Estimator]] = {
    "gae": lambda ppo: GAE(ppo.gamma, ppo.gae_lambda, ppo.whiten_advantages),
}


def build_estimator(ppo: Any) -> Estimator:
    if ppo.estimator not in ESTIMATORS:
        raise ValueError(f"ppo.estimator={ppo.estimator!r}: must be one of " + ", ".join(ESTIMATORS))
    return ESTIMATORS[ppo.estimator](ppo)
