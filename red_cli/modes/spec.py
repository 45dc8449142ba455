"""What a redistribution mode is: one spec that everything else reads.

A mode turns the reward model's readings of one rollout into per-token rewards. Its spec
says which readings it needs (the pipeline computes only those, in one RM forward), whether
it is dense (reward before the last token), how to check its knobs at start-up, and how to
apply it. Training, `red explain`, the start-up checks and the config schema all read the
registry in ``red_cli.modes``; nothing else branches on a mode's name.

Shapes: b batch, T policy response length. ``response_mask`` [b, T] bool is True on real
response tokens (through EOS).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from torch import Tensor

# Readings of the reward model beyond the sequence score that a mode can ask for.
PREFIX_SCORES = "prefix_scores"  # R(x, y<=t) at every response token, and R(x)
ATTENTION = "attention"  # the pooled token's last-layer attention on each response token
SIGNALS = (PREFIX_SCORES, ATTENTION)


class Signals(NamedTuple):
    """The reward model's readings of a rollout on policy response tokens, on the shaped scale
    (normalised / clipped / missing-EOS penalty: ``red_cli.reward.pipeline.ScoreShaper``).

    scores: [b] r_C, the shaped sequence score.
    response_mask: [b, T] bool.
    prompt_scores: [b] R(x), or None unless PREFIX_SCORES was asked for.
    prefix_scores: [b, T] R(x, y<=t) (the penalty applied at the last token, 0 on padding),
        or None unless PREFIX_SCORES was asked for.
    attention: [b, T] pooled-token attention on each response token (not renormalised), or
        None unless ATTENTION was asked for.
    """

    scores: Tensor
    response_mask: Tensor
    prompt_scores: Tensor | None = None
    prefix_scores: Tensor | None = None
    attention: Tensor | None = None


class Credit(NamedTuple):
    """A mode's output. rewards: [b, T] per-token rewards before KL, 0 outside the mask;
    target: [b] what ``rewards.sum(-1)`` must equal (the mode's sum invariant), logged as
    ``rewards/sum_minus_score``."""

    rewards: Tensor
    target: Tensor


# (knob name, value, what is allowed) for each invalid knob.
Problem = tuple[str, Any, str]


@dataclass(frozen=True)
class Mode:
    """One redistribution mode.

    name: the option of ``conf/redistribution/<name>.yaml`` and of ``redistribution.mode``.
    knobs: a dataclass of its settings (``redistribution.<name>.*``; no fields: no knobs).
    needs: the SIGNALS its ``apply`` reads.
    dense: whether it places reward before the last token (gamma < 1 then changes the
        objective: ``gamma_warning``).
    apply: (signals, knobs) -> Credit.
    check: knobs -> problems, for the start-up checks (ranges, choices).
    summary: one line for `--help` and README.
    """

    name: str
    knobs: type
    needs: frozenset[str]
    dense: bool
    apply: Callable[[Signals, Any], Credit]
    check: Callable[[Any], list[Problem]] = lambda knobs: []
    summary: str = ""

    def __post_init__(self) -> None:
        unknown = set(self.needs) - set(SIGNALS)
        if unknown:
            raise ValueError(f"mode {self.name!r} needs unknown signals {sorted(unknown)}; "
                             f"valid: {', '.join(SIGNALS)}")
