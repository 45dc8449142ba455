"""Advantages without a critic: REINFORCE++, RLOO and GRPO.

Shapes: b batch, T response length, k samples per prompt. ``response_mask`` [b, T] bool is
True on real response tokens (through EOS). Rows of one prompt are consecutive: rows
``g*k .. g*k + k - 1`` are the k responses to prompt g (``red_cli.data.PromptStream`` with
``samples_per_prompt``).

- REINFORCE++ (Hu 2025, arXiv 2501.03262; OpenRLHF ``advantage_estimator=reinforce``): the
  per-token reward (KL term included) summed to go, ``G_t = sum_{s >= t} gamma^(s-t) r_s``,
  normalised by the mean and std over every response token of the global batch. A dense
  reward changes G_t directly: nothing absorbs it, unlike a critic.
- RLOO (Ahmadian et al. 2024, arXiv 2402.14740): the sequence return ``R_i = sum_t r_t``
  minus the mean of the other k - 1 returns of the same prompt, on every token of row i.
- GRPO (Shao et al. 2024, DeepSeekMath, arXiv 2402.03300): ``(R_i - mean_g) / (std_g + eps)``
  over the prompt's group, on every token of row i.

RLOO and GRPO see only a response's sum of rewards, so where a redistribution mode puts the
reward within the response cancels out (``red_cli.train.estimators`` refuses dense modes with
them).
"""

from __future__ import annotations

import torch


def rewards_to_go(rewards: torch.Tensor, response_mask: torch.Tensor,
                  gamma: float = 1.0) -> torch.Tensor:
    """``G_t = sum_{s >= t} gamma^(s-t) r_s m_s`` over the real tokens of each row; 0 on padding.

    The loop runs backwards over T (a data dependency); each step is vectorised over b.

    Args:
        rewards: [b, T] per-token rewards (KL term included).
        response_mask: [b, T] bool.
        gamma: discount in (0, 1].

    Returns:
        [b, T] in the rewards' dtype (float32 at least).
    """
    dtype = torch.promote_types(rewards.dtype, torch.float32)
    zero = rewards.new_zeros((), dtype=dtype)
    rewards = torch.where(response_mask, rewards.to(dtype), zero)
    out = torch.zeros_like(rewards)
    running = rewards.new_zeros(rewards.shape[0], dtype=dtype)
    for t in reversed(range(rewards.shape[1])):
        running = torch.where(response_mask[:, t], rewards[:, t] + gamma * running, zero)
        out[:, t] = running
    return out


def whiten_with(x: torch.Tensor, response_mask: torch.Tensor, mean: float, std: float,
                eps: float = 1e-8) -> torch.Tensor:
    """``(x - mean) / (std + eps)`` on real tokens, 0 on padding. The statistics come from the
    caller: REINFORCE++ takes them over the global batch (every rank's tokens)."""
    return torch.where(response_mask, (x - mean) / (std + eps), torch.zeros((), dtype=x.dtype))


def _groups(returns: torch.Tensor, k: int) -> torch.Tensor:
    if returns.dim() != 1 or k < 2 or returns.shape[0] % k:
        raise ValueError(f"returns must be [n * k] with k >= 2 samples per prompt; got shape "
                         f"{tuple(returns.shape)} and k={k}")
    return returns.reshape(-1, k)


def rloo_advantages(returns: torch.Tensor, k: int) -> torch.Tensor:
    """``A_i = R_i - (sum_{j in g} R_j - R_i) / (k - 1)``: each return minus the mean of the
    other returns to the same prompt (leave one out). [n * k] -> [n * k]."""
    g = _groups(returns, k)
    others = (g.sum(-1, keepdim=True) - g) / (k - 1)
    return (g - others).reshape(-1)


def grpo_advantages(returns: torch.Tensor, k: int, eps: float = 1e-6) -> torch.Tensor:
    """``A_i = (R_i - mean_g) / (std_g + eps)`` with the group's unbiased std. [n * k] -> [n * k]."""
    g = _groups(returns, k)
    return ((g - g.mean(-1, keepdim=True)) / (g.std(-1, keepdim=True) + eps)).reshape(-1)


def per_token(advantages: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """A sequence's advantage [b] on each of its real tokens: [b, T], 0 on padding."""
    return torch.where(response_mask, advantages[:, None].to(torch.float32),
                       torch.zeros((), dtype=torch.float32))
