"""Masked reductions and response-mask helpers.

Shapes: b batch, T response length. ``mask`` / ``response_mask`` is a bool tensor that is
True on real response tokens (through EOS) and False on padding. Every reduction here is
safe on an all-False mask: it returns 0, never NaN, because a batch can legitimately hold
only empty responses (e.g. a policy that emits EOS first on every prompt after truncation).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``x`` over positions where ``mask`` is True.

    ``sum_t x_t * m_t``. ``torch.where`` instead of a product, so NaN/inf sitting in padding
    positions cannot leak into the sum (``0 * inf`` is NaN).

    Args:
        x: any shape, e.g. [b, T].
        mask: bool, broadcastable to ``x``; True = included.
        dim: reduce over this dim; None reduces over everything (a 0-d tensor).
    """
    masked = torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))
    return masked.sum() if dim is None else masked.sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over positions where ``mask`` is True; 0 where nothing is selected.

    ``sum_t x_t * m_t / max(sum_t m_t, 1)`` (TRL ``masked_mean``, plus the empty-mask guard).

    Args:
        x: any shape, e.g. [b, T].
        mask: bool, broadcastable to ``x``; True = included.
        dim: reduce over this dim ([b, T] with dim=-1 gives [b]); None gives a 0-d tensor.
    """
    mask = torch.broadcast_to(mask, x.shape)
    count = mask.sum() if dim is None else mask.sum(dim)
    return masked_sum(x, mask, dim) / count.clamp(min=1).to(x.dtype)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of the selected elements of ``x`` (all of them together), as a 0-d tensor.

    ``mu = masked_mean(x, m)``; ``var = sum_t m_t (x_t - mu)^2 / (n - 1)`` if ``unbiased``
    else ``/ n``, with ``n = sum_t m_t`` (TRL ``masked_var``). TRL raises on n = 0 and divides
    by zero on n = 1; here the denominator is clamped to 1, and since the numerator is exactly
    0 for n <= 1 the variance is 0 in both cases rather than an error or NaN.

    Args:
        x: any shape, e.g. [b, T].
        mask: bool, broadcastable to ``x``; True = included.
        unbiased: Bessel's correction (n - 1).
    """
    mask = torch.broadcast_to(mask, x.shape)
    centered = x - masked_mean(x, mask)
    n = mask.sum()
    denom = (n - 1 if unbiased else n).clamp(min=1).to(x.dtype)
    return masked_sum(centered * centered, mask) / denom


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Normalise the selected elements of ``x`` to unit variance (and zero mean).

    ``(x - mu) / sqrt(var + eps)``, with mu and the unbiased var over the selected elements;
    ``shift_mean=False`` adds mu back, i.e. ``(x - mu) / sqrt(var + eps) + mu``
    (TRL ``masked_whiten`` semantics; torchtune's flag means the opposite). Positions outside
    the mask are set to 0, so whitened advantages never carry weight on padding.

    Meant for advantages. Never apply it to per-token rewards: it breaks the return
    equivalence of redistribution (RED, arXiv 2411.08302: potential-based shaping).

    Args:
        x: any shape, e.g. [b, T].
        mask: bool, broadcastable to ``x``; True = included.
        shift_mean: False keeps the original mean.
        eps: added to the variance so a constant input gives 0, not NaN.

    Returns:
        Same shape as ``x``.
    """
    mask = torch.broadcast_to(mask, x.shape)
    mean = masked_mean(x, mask)
    whitened = (x - mean) * torch.rsqrt(masked_var(x, mask) + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask, whitened, torch.zeros((), dtype=whitened.dtype, device=x.device))


def last_true_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last True along the last dim of ``mask`` [b, T] -> [b] long; -1 if none.

    ``max_t (t if m_t else -1)``. Used to find the last real response token (where the
    sequence score lands), so positions always come from the mask, never from lengths.
    """
    positions = torch.arange(mask.shape[-1], device=mask.device)
    return torch.where(mask, positions, -1).amax(dim=-1)


def first_true_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the first True along the last dim of ``mask`` [b, T] -> [b] long; -1 if none.

    ``min_t (t if m_t else T)``, with T mapped to -1 so both helpers share one sentinel.
    """
    length = mask.shape[-1]
    positions = torch.arange(length, device=mask.device)
    first = torch.where(mask, positions, length).amin(dim=-1)
    return torch.where(first == length, -1, first)


def truncate_after_eos(
    response_ids: torch.Tensor,
    eos_token_id: int | Sequence[int],
    pad_token_id: int,
    keep_sampled_pad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut each response after its first EOS and build its ``response_mask``.

    Per row: the first EOS (any of ``eos_token_id``, e.g. a chat model's end-of-turn and its
    end-of-text) is kept and masked in; everything after it becomes ``pad_token_id`` and is
    masked out. A row with no EOS keeps every token (a response truncated by the length
    limit), except that a pad token that is not an EOS ends the row too:

    - ``keep_sampled_pad=False`` (right-padded data): the pad is padding, masked out, and a row
      that starts with it is empty;
    - ``keep_sampled_pad=True`` (sampled output, where `generate` only pads rows after their
      EOS, so a pad before any EOS was sampled by the policy): the pad is the action that
      ended the response, kept and masked in like an EOS, so no row is ever empty.

    ``pad_token_id`` among the EOS ids (GPT-2 style) works: the first such token is an EOS.

    ``m_t = [no end strictly before t] and [t is not a padding pad]``: contiguous from index 0.

    Args:
        response_ids: [b, T] long, the generated tokens only (no prompt), right-padded.
        eos_token_id: one id or several that end a response.
        pad_token_id: id written into masked-out positions.
        keep_sampled_pad: see above.

    Returns:
        (ids [b, T] long with pad after the end, response_mask [b, T] bool).
    """
    eos_ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    is_eos = torch.isin(response_ids, torch.tensor(eos_ids, device=response_ids.device))
    is_pad = (response_ids == pad_token_id) & ~is_eos
    if keep_sampled_pad:
        ends = is_eos | is_pad
        response_mask = (ends.cumsum(dim=-1) - ends.long()) == 0
    else:
        eos_before = (is_eos.cumsum(dim=-1) - is_eos.long()) > 0
        pad_at_or_before = is_pad.cumsum(dim=-1) > 0
        response_mask = ~(eos_before | pad_at_or_before)
    ids = torch.where(response_mask, response_ids, pad_token_id)
    return ids, response_mask


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """[b, L] position ids counting real tokens only, for a mask of any padding side.

    ``pos_j = max(sum_{i <= j} m_i - 1, 0)``, so a left-padded row is numbered exactly as the
    same sequence alone (GPT-2 would otherwise count the padding on the left). Every forward
    over a padded [query | response] batch passes these, as HF's `generate` does.
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
