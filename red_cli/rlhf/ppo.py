"""PPO pieces: token log-probs and entropy from logits, clipped policy and value losses.

Shapes: b batch, T response length, V vocabulary size. ``response_mask`` [b, T] bool is
True on real response tokens (through EOS) and False on padding; every loss is a masked
mean over all real tokens of the (micro) batch, so padding never contributes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from red_cli.rlhf.masking import masked_mean

# Rows of [*, V] logits processed at once: bounds the float32 temporaries to
# chunk * V elements instead of b * T * V (OpenRLHF ``_logsumexp_by_chunk``).
_CHUNK_ROWS = 1024


def _chunked(
    fn: Callable[[torch.Tensor], torch.Tensor], logits: torch.Tensor, chunk_rows: int
) -> torch.Tensor:
    # Half-precision logsumexp loses too much (OpenRLHF falls back to a loop for bf16), so
    # each chunk is upcast to float32, which is where the memory bound matters.
    flat = logits.reshape(-1, logits.shape[-1])
    dtype = torch.promote_types(logits.dtype, torch.float32)
    out = torch.cat([fn(chunk.to(dtype)) for chunk in flat.split(chunk_rows)])
    return out.view(logits.shape[:-1])


def gather_logprobs(
    logits: torch.Tensor, labels: torch.Tensor, chunk_rows: int = _CHUNK_ROWS
) -> torch.Tensor:
    """Log-probability of each label: ``log softmax(z)_y = z_y - logsumexp(z)``.

    Computed as a gather minus a chunked logsumexp, so no full [b, T, V] log-softmax is
    materialised (OpenRLHF ``log_probs_from_logits``). Differentiable.

    Args:
        logits: [..., V] ([b, T, V], or [n, V] for n tokens), aligned so that each row of V
            predicts the label at the same index.
        labels: [...] long token ids (padding ids are fine; mask the result).
        chunk_rows: rows of V logits per logsumexp call.

    Returns:
        logprobs: [...], float32 for half-precision logits, else the logits' dtype.
    """
    dtype = torch.promote_types(logits.dtype, torch.float32)
    label_logits = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1).to(dtype)
    return label_logits - _chunked(lambda z: torch.logsumexp(z, dim=-1), logits, chunk_rows)


def _entropy(z: torch.Tensor) -> torch.Tensor:
    # H = logsumexp(z) - sum_v softmax(z)_v z_v, which avoids log(0) on tiny probabilities.
    return torch.logsumexp(z, dim=-1) - (torch.softmax(z, dim=-1) * z).sum(dim=-1)


def entropy_from_logits(logits: torch.Tensor, chunk_rows: int = _CHUNK_ROWS) -> torch.Tensor:
    """Entropy of the categorical distribution at each position.

    ``H_t = -sum_v p_v log p_v = logsumexp(z) - sum_v softmax(z)_v z_v`` (TRL
    ``entropy_from_logits``), chunked over rows like ``gather_logprobs``.

    Args:
        logits: [..., V].

    Returns:
        entropy: [...] (float32 for half-precision logits).
    """
    return _chunked(_entropy, logits, chunk_rows)


class PolicyLoss(NamedTuple):
    """Result of ``policy_loss``; every field is a 0-d tensor, diagnostics detached."""

    loss: torch.Tensor
    """0-d, the clipped surrogate to minimise (differentiable)."""
    clipfrac: torch.Tensor
    """0-d, fraction of real tokens where the clipped term was active."""
    approx_kl: torch.Tensor
    """0-d, 0.5 * mean((logp - old_logp)^2) over real tokens (TRL's k2 estimate)."""


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    cliprange: float,
) -> PolicyLoss:
    """PPO clipped surrogate objective, as a loss.

        rho_t = exp(logp_t - old_logp_t)
        L     = mean_t max(-A_t rho_t, -A_t clip(rho_t, 1 - eps, 1 + eps))   over real tokens

    Schulman et al. 2017, "Proximal Policy Optimization Algorithms", eq. 7 (negated);
    TRL / OpenRLHF ``PolicyLoss``. ``approx_kl`` = 0.5 * mean((logp - old_logp)^2), TRL's
    estimator (k2 in Schulman's blog), used only for logging and early stopping.

    Args:
        logprobs: [b, T] log pi_theta(y_t), differentiable.
        old_logprobs: [b, T] log pi_old(y_t) from the rollout.
        advantages: [b, T] (usually whitened over the batch).
        response_mask: [b, T] bool, True on real response tokens.
        cliprange: eps.
    """
    # Zero the log-ratio on padding before exp: garbage there could overflow to inf, and a
    # masked-out inf still poisons the backward pass with 0 * inf = NaN.
    log_ratio = torch.where(response_mask, logprobs - old_logprobs, logprobs.new_zeros(()))
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), response_mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).to(ratio.dtype), response_mask)
        approx_kl = 0.5 * masked_mean(log_ratio * log_ratio, response_mask)
    return PolicyLoss(loss=loss, clipfrac=clipfrac, approx_kl=approx_kl)


class ValueLoss(NamedTuple):
    """Result of ``value_loss``; every field is a 0-d tensor."""

    loss: torch.Tensor
    """0-d, 0.5 * mean of the larger of the clipped and unclipped squared errors."""
    clipfrac: torch.Tensor
    """0-d, detached, fraction of real tokens where the clipped error was the larger one."""


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    response_mask: torch.Tensor,
    cliprange_value: float,
) -> ValueLoss:
    """Clipped value loss.

        V^clip_t = old_V_t + clip(V_t - old_V_t, -eps_v, eps_v)
        L        = 0.5 * mean_t max((V_t - R_t)^2, (V^clip_t - R_t)^2)   over real tokens

    TRL ``PPOTrainer`` and OpenRLHF ``ValueLoss`` (from OpenAI baselines ppo2).

    Args:
        values: [b, T] current critic values, differentiable.
        old_values: [b, T] critic values from the rollout.
        returns: [b, T] GAE returns (``compute_gae``).
        response_mask: [b, T] bool, True on real response tokens.
        cliprange_value: eps_v.
    """
    clipped_values = old_values + torch.clamp(
        values - old_values, -cliprange_value, cliprange_value
    )
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), response_mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped_error > unclipped_error).to(values.dtype), response_mask)
    return ValueLoss(loss=loss, clipfrac=clipfrac)
