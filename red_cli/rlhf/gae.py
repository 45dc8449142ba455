"""Generalised Advantage Estimation over per-token rewards.

Shapes: b batch, T response length. ``response_mask`` [b, T] bool is True on real response
tokens (through EOS) and False on padding; real tokens are contiguous within a row.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class GAEOutput(NamedTuple):
    """Result of ``compute_gae``."""

    advantages: torch.Tensor
    """[b, T] A_t, 0 outside the mask (not whitened)."""
    returns: torch.Tensor
    """[b, T] A_t + V_t, the critic's regression target, 0 outside the mask."""


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    response_mask: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> GAEOutput:
    """GAE(gamma, lambda) advantages and returns for per-token rewards.

        delta_t = r_t + gamma * V_{t+1} * m_{t+1} - V_t
        A_t     = delta_t + gamma * lambda * A_{t+1}      (A_{t+1} = 0 past the end)
        R_t     = A_t + V_t

    Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage
    Estimation", eq. 16; TRL and OpenRLHF ``get_advantages_and_returns``. The state after
    the last real token is terminal, so its value counts as 0 (``m_{t+1}``): the EOS token
    or the length limit ends the episode. Rewards and values on padding are ignored, and
    the outputs are 0 there.

    The loop runs backwards over T (a data dependency); each step is vectorised over b.

    Args:
        rewards: [b, T] per-token rewards (redistributed, KL included).
        values: [b, T] critic values V_t of the state before token t is emitted.
        response_mask: [b, T] bool, True on real response tokens.
        gamma: discount; keep 1 for dense rewards (``red_cli.modes.gamma_warning``).
        gae_lambda: GAE lambda.

    Returns:
        GAEOutput(advantages [b, T], returns [b, T]).
    """
    dtype = torch.promote_types(rewards.dtype, values.dtype)
    zero = values.new_zeros((), dtype=dtype)
    values = torch.where(response_mask, values.to(dtype), zero)
    rewards = torch.where(response_mask, rewards.to(dtype), zero)
    next_value = values.new_zeros(values.shape[0])
    next_advantage = values.new_zeros(values.shape[0])
    advantages_reversed = []
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = torch.where(
            response_mask[:, t], delta + gamma * gae_lambda * next_advantage, zero
        )
        # values are already 0 on padding, so this is V_{t+1} * m_{t+1} for step t - 1.
        next_value = values[:, t]
        advantages_reversed.append(next_advantage)
    advantages = torch.stack(advantages_reversed[::-1], dim=1)
    returns = torch.where(response_mask, advantages + values, zero)
    return GAEOutput(advantages=advantages, returns=returns)
