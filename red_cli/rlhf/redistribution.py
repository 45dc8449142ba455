"""Turn one holistic reward-model score per sequence into per-token rewards.

Modes: ``sparse`` (classic RLHF), ``td`` (RED, Li et al. 2024,
arXiv 2411.08302), ``abc`` (Attention Based Credit, Chan et al. 2024, arXiv 2402.00782) and
``uniform`` (ABC's control). Each function returns float rewards [b, T] that are exactly 0
outside ``response_mask``, and whose per-row sum is the quantity named in its docstring, so
that with gamma = 1 the return from the first token equals the sequence score.

Shapes: b batch, T response length. ``response_mask`` [b, T] bool is True on real response
tokens (through EOS) and False on padding. Real tokens are assumed contiguous, but they need
not start at index 0; an all-False row (nothing generated) gets all-zero rewards.

Per-token KL is added afterwards by ``red_cli.rlhf.kl``, the same way for every mode. Never
whiten or clip the output (it breaks return equivalence): normalise the score beforehand.
The modes themselves (which readings each needs, its knobs, its checks) are specs in
``red_cli.modes`` that call these functions.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from red_cli.rlhf.masking import first_true_index, last_true_index


def _check_shapes(
    response_mask: torch.Tensor, scores: torch.Tensor, **per_token: torch.Tensor
) -> None:
    if response_mask.dim() != 2 or response_mask.dtype != torch.bool:
        raise ValueError(
            f"response_mask must be a [b, T] bool tensor, got {response_mask.dtype} "
            f"of shape {tuple(response_mask.shape)}"
        )
    if scores.shape != response_mask.shape[:1]:
        raise ValueError(
            f"scores must be [b] = {tuple(response_mask.shape[:1])}, got {tuple(scores.shape)}"
        )
    for name, tensor in per_token.items():
        if tensor.shape != response_mask.shape:
            raise ValueError(
                f"{name} must be [b, T] = {tuple(response_mask.shape)}, got {tuple(tensor.shape)}"
            )


def _float(x: torch.Tensor) -> torch.Tensor:
    # Rewards are summed over many tokens downstream; bf16/fp16 scores are upcast so the
    # sum invariants hold to float32 precision. float64 stays float64.
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _zero_outside(rewards: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    return torch.where(response_mask, rewards, rewards.new_zeros(()))


def sparse(scores: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Put each sequence score on its last real response token.

    ``r_t = r_C * [t = last real token]``; ``sum_t r_t = r_C`` (classic RLHF; Ziegler et al.
    2019, Ouyang et al. 2022). An all-False row gets no reward at all.

    Args:
        scores: [b], the sequence score r_C.
        response_mask: [b, T] bool, True on real response tokens.

    Returns:
        rewards: [b, T] float.
    """
    _check_shapes(response_mask, scores)
    last = last_true_index(response_mask)
    positions = torch.arange(response_mask.shape[1], device=response_mask.device)
    # last == -1 (all-False row) matches no position, so that row stays zero.
    at_last = positions[None, :] == last[:, None]
    return _zero_outside(_float(scores)[:, None].expand(response_mask.shape), at_last)


def uniform(scores: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Spread each score evenly over the real response tokens (ABC paper's control).

    ``r_t = r_C / n * m_t`` with ``n = sum_t m_t``; ``sum_t r_t = r_C`` (the control in Chan
    et al. 2024). ``n`` is clamped to 1 so an all-False row gives zeros, not NaN.

    Args:
        scores: [b], the sequence score r_C.
        response_mask: [b, T] bool, True on real response tokens.

    Returns:
        rewards: [b, T] float.
    """
    _check_shapes(response_mask, scores)
    scores = _float(scores)
    n = response_mask.sum(dim=-1).clamp(min=1).to(scores.dtype)
    return _zero_outside((scores / n)[:, None].expand(response_mask.shape), response_mask)


# r~_first = P[first] - baseline: the first real token is differenced against this.
_FIRST_TOKEN_BASELINES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    # R(x): the sum telescopes to r_C - R(x).
    "prompt_baseline": lambda first_score, prompt_scores: prompt_scores,
    # r~_first = 0 (RED's pseudo-code); the sum is P[last] - P[first].
    "zero": lambda first_score, prompt_scores: first_score,
    # r~_first = P[first]; the sum is exactly r_C = P[last].
    "absolute": lambda first_score, prompt_scores: torch.zeros_like(prompt_scores),
}
TD_FIRST_TOKEN = tuple(_FIRST_TOKEN_BASELINES)


def td(
    position_scores: torch.Tensor,
    prompt_scores: torch.Tensor,
    response_mask: torch.Tensor,
    first_token: str = "prompt_baseline",
    beta_c: float = 1.0,
) -> torch.Tensor:
    """RED: per-token reward = change of the reward model's own prefix score (time difference).

    With ``P_t = position_scores[:, t] = R(x, y<=t)`` (the reward head read at response
    token t of one causal forward pass) and ``R(x) = prompt_scores``:

        r~_t = P_t - P_prev(t)                     t a real token after the first
        r~_first = P_first - baseline              baseline per ``first_token``:
            prompt_baseline: R(x)   (sum_t r~_t = P_last - R(x) = r_C - R(x))
            zero:            P_first (r~_first = 0; sum = P_last - P_first)
            absolute:        0      (sum = P_last = r_C)
        r^_t = beta_c * r~_t + (1 - beta_c) * sparse(P_last)_t

    ``prev(t)`` is the previous real token, found from the mask (a running max of real
    indices), so rows whose response starts later than index 0 telescope correctly; the
    paper's default is beta_c = 1 (Li et al. 2024, arXiv 2411.08302).
    The sequence score is P_last, read at the pooled position. With gamma < 1 this is no
    longer potential-based shaping: see ``red_cli.modes.gamma_warning``.

    Args:
        position_scores: [b, T], reward head at every response position; padding ignored.
        prompt_scores: [b], reward head at the last prompt token, R(x).
        response_mask: [b, T] bool, True on real response tokens.
        first_token: "prompt_baseline", "zero" or "absolute".
        beta_c: weight of the time-difference reward against the sparse one.

    Returns:
        rewards: [b, T] float.
    """
    if first_token not in _FIRST_TOKEN_BASELINES:
        raise ValueError(
            f"td: unknown first_token={first_token!r}; valid choices: "
            f"{sorted(_FIRST_TOKEN_BASELINES)}"
        )
    _check_shapes(response_mask, prompt_scores, position_scores=position_scores)
    scores = _float(position_scores)
    prompt_scores = _float(prompt_scores)

    positions = torch.arange(response_mask.shape[1], device=response_mask.device)
    last_real_upto = torch.where(response_mask, positions, -1).cummax(dim=-1).values
    # Shift right by one: the previous real token strictly before t (-1 = none, first token).
    prev_index = torch.cat([torch.full_like(last_real_upto[:, :1], -1), last_real_upto[:, :-1]], 1)
    prev_score = scores.gather(1, prev_index.clamp(min=0))

    last_score, baseline = _td_ends(scores, prompt_scores, response_mask, first_token)
    previous = torch.where(prev_index >= 0, prev_score, baseline[:, None])
    time_difference = _zero_outside(scores - previous, response_mask)
    return beta_c * time_difference + (1.0 - beta_c) * sparse(last_score, response_mask)


def td_total(
    position_scores: torch.Tensor,
    prompt_scores: torch.Tensor,
    response_mask: torch.Tensor,
    first_token: str = "prompt_baseline",
    beta_c: float = 1.0,
) -> torch.Tensor:
    """What each row of :func:`td` sums to, from the same inputs (its invariant).

        beta_c * (P_last - baseline) + (1 - beta_c) * P_last

    with ``baseline`` per ``first_token`` (R(x), P_first or 0), P_last / P_first the prefix
    scores at the last / first real token. The differences telescope, so this is computed
    without them; a test checks it against ``td(...).sum(-1)``.

    Args: as :func:`td`. Returns: [b].
    """
    _check_shapes(response_mask, prompt_scores, position_scores=position_scores)
    last, baseline = _td_ends(position_scores, prompt_scores, response_mask, first_token)
    return beta_c * (last - baseline) + (1 - beta_c) * last


def _td_ends(scores: torch.Tensor, prompt_scores: torch.Tensor, response_mask: torch.Tensor,
             first_token: str) -> tuple[torch.Tensor, torch.Tensor]:
    """([b] P_last, [b] the first token's baseline) of td's prefix path; 0-index for empty rows."""
    last = scores.gather(1, last_true_index(response_mask).clamp(min=0)[:, None]).squeeze(1)
    first = scores.gather(1, first_true_index(response_mask).clamp(min=0)[:, None]).squeeze(1)
    return last, _FIRST_TOKEN_BASELINES[first_token](first, prompt_scores)


def abc(
    attention: torch.Tensor,
    scores: torch.Tensor,
    response_mask: torch.Tensor,
    beta: float = 0.8,
) -> torch.Tensor:
    """Attention Based Credit: share the score by the reward model's attention to each token.

    ``w_t = a_t m_t / sum_s a_s m_s`` (renormalised over the real response tokens),
    ``r_t = beta * w_t * r_C + (1 - beta) * r_C * [t = last real token]``;
    ``sum_t r_t = r_C`` (Chan et al. 2024, arXiv 2402.00782; paper beta = 0.8).

    ``attention`` is the last layer's head-averaged attention row of the pooled token, read
    at the response columns (non-negative, not yet normalised). If a row's masked attention
    sums to 0 (fp16 underflow on long contexts, or an attention sink that takes all the
    mass), its weights fall back to uniform over the real tokens: the sum invariant still
    holds and no NaN enters training.

    Args:
        attention: [b, T] non-negative attention of the pooled token to response token t.
        scores: [b], the sequence score r_C.
        response_mask: [b, T] bool, True on real response tokens.
        beta: share of the score given by attention; the rest stays sparse.

    Returns:
        rewards: [b, T] float.
    """
    _check_shapes(response_mask, scores, attention=attention)
    scores = _float(scores)
    attention = _zero_outside(attention.to(scores.dtype), response_mask)
    total = attention.sum(dim=-1, keepdim=True)
    has_mass = total > 0
    weights = torch.where(
        has_mass,
        attention / torch.where(has_mass, total, 1.0),
        uniform(torch.ones_like(scores), response_mask),
    )
    return beta * weights * scores[:, None] + (1.0 - beta) * sparse(scores, response_mask)
