"""last_k: the score spread evenly over the last k response tokens (a control between sparse,
k = 1, and uniform, k >= the response length): does credit near the end help on its own?

This file is the worked example of README "Adding a redistribution mode": a knobs dataclass,
the maths as a pure function, the start-up check, and the spec the registry finds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from red_cli.modes.spec import Credit, Mode, Problem, Signals


@dataclass
class LastKConfig:
    # How many of the last real response tokens share the score (all of them if fewer).
    k: int = 4


def last_k(scores: torch.Tensor, response_mask: torch.Tensor, k: int) -> torch.Tensor:
    """``r_t = r_C / min(k, n)`` on the last ``min(k, n)`` real tokens of each row, 0 elsewhere.

    ``n = sum_t m_t``; a token is among the last k when at most k real tokens lie at or after
    it. ``sum_t r_t = r_C`` for every row with a real token (all-False rows get zeros).

    Args:
        scores: [b] the sequence score r_C.
        response_mask: [b, T] bool, True on real response tokens.
        k: >= 1.

    Returns:
        rewards: [b, T] float (float32 at least).
    """
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
    from_end = response_mask.flip(-1).long().cumsum(-1).flip(-1)  # real tokens at or after t
    chosen = response_mask & (from_end <= k)
    share = chosen.sum(-1).clamp(min=1).to(scores.dtype)
    return torch.where(chosen, (scores / share)[:, None], torch.zeros((), dtype=scores.dtype))


def apply(signals: Signals, knobs: LastKConfig) -> Credit:
    return Credit(last_k(signals.scores, signals.response_mask, knobs.k), signals.scores)


def check(knobs: LastKConfig) -> list[Problem]:
    return [] if knobs.k >= 1 else [("k", knobs.k, "must be >= 1")]


MODE = Mode(name="last_k", knobs=LastKConfig, needs=frozenset(), dense=True, apply=apply,
            check=check, summary="control: the score spread over the last k response tokens")
