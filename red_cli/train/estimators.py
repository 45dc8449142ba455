"""Advantage estimators: how per-token rewards (KL included) become PPO advantages.

An estimator is chosen by ``ppo.estimator`` and built once at setup. It says whether it
needs a critic (without one no critic engine is built, no value loss computed, no critic
checkpointed), how many responses it wants per prompt, and whether the KL penalty belongs in
the reward (PPO, REINFORCE++, RLOO) or in the loss (GRPO). It maps (rewards, values, mask) to
advantages and, with a critic, the critic's targets. The maths lives in ``red_cli.rlhf``
(``gae``, ``critic_free``); this module only wires it to the config.

Shapes: b batch, T response length; ``response_mask`` [b, T] bool.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import torch

from red_cli import runtime
from red_cli.rlhf.critic_free import (
    grpo_advantages,
    per_token,
    rewards_to_go,
    rloo_advantages,
    whiten_with,
)
from red_cli.rlhf.gae import compute_gae
from red_cli.rlhf.masking import masked_whiten


class Advantages(NamedTuple):
    advantages: torch.Tensor
    """[b, T] what the policy loss weighs each token's log-ratio by; 0 outside the mask."""
    returns: torch.Tensor | None
    """[b, T] the critic's regression target, or None without a critic."""


class Estimator(Protocol):
    """needs_critic: whether ``values`` are needed (and a critic is trained on ``returns``);
    samples_per_prompt: responses sampled to each prompt (rows of a prompt are consecutive);
    kl_in_loss: the KL penalty is a loss term (k3, coefficient ``ppo.kl_coef``) instead of a
    part of the per-token reward."""

    name: str
    needs_critic: bool
    samples_per_prompt: int
    kl_in_loss: bool

    def __call__(self, rewards: torch.Tensor, values: torch.Tensor | None,
                 response_mask: torch.Tensor) -> Advantages: ...


class GAE:
    """GAE(gamma, lambda) with a critic (Schulman et al. 2016), whitened over the batch when
    ``whiten`` (``ppo.whiten_advantages``): the estimator of TRL's and OpenRLHF's PPO."""

    name = "gae"
    needs_critic = True
    kl_in_loss = False

    def __init__(self, gamma: float, gae_lambda: float, whiten: bool, samples_per_prompt: int = 1):
        self.gamma, self.gae_lambda, self.whiten = gamma, gae_lambda, whiten
        self.samples_per_prompt = samples_per_prompt

    def __call__(self, rewards: torch.Tensor, values: torch.Tensor | None,
                 response_mask: torch.Tensor) -> Advantages:
        advantages, returns = compute_gae(rewards, values, response_mask, self.gamma,
                                          self.gae_lambda)
        if self.whiten:
            advantages = masked_whiten(advantages, response_mask)
        return Advantages(advantages, returns)


class ReinforcePP:
    """REINFORCE++: rewards to go, normalised by the mean and std of every response token of
    the global batch (all ranks); no critic."""

    name = "reinforce_pp"
    needs_critic = False
    kl_in_loss = False

    def __init__(self, gamma: float, world_size: int, samples_per_prompt: int = 1):
        self.gamma, self.world_size = gamma, world_size
        self.samples_per_prompt = samples_per_prompt

    def __call__(self, rewards: torch.Tensor, values: torch.Tensor | None,
                 response_mask: torch.Tensor) -> Advantages:
        returns = rewards_to_go(rewards, response_mask, self.gamma)
        real = returns[response_mask].double()
        n, total, squares = runtime.all_reduce_sum(
            [float(real.numel()), real.sum().item(), (real * real).sum().item()],
            self.world_size)
        mean = total / max(n, 1.0)
        var = (squares - n * mean * mean) / max(n - 1.0, 1.0)
        return Advantages(whiten_with(returns, response_mask, mean, max(var, 0.0) ** 0.5), None)


class GroupBaseline:
    """RLOO or GRPO: each response's return ``sum_t r_t`` against the other responses to its
    prompt, the same advantage on every token; no critic."""

    needs_critic = False

    def __init__(self, name: str, samples_per_prompt: int):
        self.name = name
        self.samples_per_prompt = samples_per_prompt
        # GRPO keeps the reward free of KL and penalises it in the loss (DeepSeekMath).
        self.kl_in_loss = name == "grpo"
        self._baseline = {"rloo": rloo_advantages, "grpo": grpo_advantages}[name]

    def __call__(self, rewards: torch.Tensor, values: torch.Tensor | None,
                 response_mask: torch.Tensor) -> Advantages:
        returns = torch.where(response_mask, rewards.float(), 0.0).sum(-1)
        return Advantages(per_token(self._baseline(returns, self.samples_per_prompt),
                                    response_mask), None)


# ppo.estimator -> a builder from the ppo config node and the number of ranks.
ESTIMATORS: dict[str, Callable[[Any, int], Estimator]] = {
    "gae": lambda ppo, world: GAE(ppo.gamma, ppo.gae_lambda, ppo.whiten_advantages,
                                  ppo.samples_per_prompt),
    "reinforce_pp": lambda ppo, world: ReinforcePP(ppo.gamma, world, ppo.samples_per_prompt),
    "rloo": lambda ppo, world: GroupBaseline("rloo", ppo.samples_per_prompt),
    "grpo": lambda ppo, world: GroupBaseline("grpo", ppo.samples_per_prompt),
}


def build_estimator(ppo: Any, world_size: int = 1) -> Estimator:
    if ppo.estimator not in ESTIMATORS:
        raise ValueError(f"ppo.estimator={ppo.estimator!r}: must be one of " + ", ".join(ESTIMATORS))
    return ESTIMATORS[ppo.estimator](ppo, world_size)
