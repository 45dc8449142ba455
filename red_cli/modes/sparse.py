"""sparse: classic RLHF, the whole score on the last response token (the baseline)."""

from __future__ import annotations

from dataclasses import dataclass

from red_cli.modes.spec import Credit, Mode, Signals
from red_cli.rlhf import redistribution


@dataclass
class SparseConfig:
    """No knobs."""


def apply(signals: Signals, knobs: SparseConfig) -> Credit:
    return Credit(redistribution.sparse(signals.scores, signals.response_mask), signals.scores)


MODE = Mode(name="sparse", knobs=SparseConfig, needs=frozenset(), dense=False, apply=apply,
            summary="classic RLHF: the whole score on the last response token")
