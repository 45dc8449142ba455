"""uniform: the score spread evenly over the response tokens (the ABC paper's control)."""

from __future__ import annotations

from dataclasses import dataclass

from red_cli.modes.spec import Credit, Mode, Signals
from red_cli.rlhf import redistribution


@dataclass
class UniformConfig:
    """No knobs."""


def apply(signals: Signals, knobs: UniformConfig) -> Credit:
    return Credit(redistribution.uniform(signals.scores, signals.response_mask), signals.scores)


MODE = Mode(name="uniform", knobs=UniformConfig, needs=frozenset(), dense=True, apply=apply,
            summary="control: score / T on every response token")
