"""abc: Attention Based Credit (Chan et al. 2024, arXiv 2402.00782): the score shared by the
reward model's last-layer attention of its pooled token, beta of it; the rest stays sparse."""

from __future__ import annotations

from dataclasses import dataclass

from red_cli.modes.spec import ATTENTION, Credit, Mode, Problem, Signals
from red_cli.rlhf import redistribution


@dataclass
class ABCConfig:
    # Share of the score spread by attention (paper: 0.8); 1 - beta stays on the last token.
    beta: float = 0.8


def apply(signals: Signals, knobs: ABCConfig) -> Credit:
    rewards = redistribution.abc(signals.attention.float(), signals.scores,
                                 signals.response_mask, beta=knobs.beta)
    return Credit(rewards, signals.scores)


def check(knobs: ABCConfig) -> list[Problem]:
    return [] if 0.0 <= knobs.beta <= 1.0 else [("beta", knobs.beta, "must be in [0, 1]")]


MODE = Mode(name="abc", knobs=ABCConfig, needs=frozenset({ATTENTION}), dense=True, apply=apply,
            check=check, summary="ABC: the score spread by the RM's last-layer attention")
