"""td: RED / R3HF (Li et al. 2024, arXiv 2411.08302): each token's reward is the change of the
reward model's own prefix score, r_t = R(x, y<=t) - R(x, y<=t-1), all prefix scores from one
forward of a causal RM (one forward per prefix for a bidirectional one)."""

from __future__ import annotations

from dataclasses import dataclass

from red_cli.modes.spec import PREFIX_SCORES, Credit, Mode, Problem, Signals
from red_cli.rlhf import redistribution


@dataclass
class TDConfig:
    # The first token's difference: prompt_baseline (against R(x)) | zero | absolute.
    first_token: str = "prompt_baseline"
    # Weight of the dense part (paper: 1); 1 - beta_c stays sparse.
    beta_c: float = 1.0


def apply(signals: Signals, knobs: TDConfig) -> Credit:
    args = (signals.prefix_scores, signals.prompt_scores, signals.response_mask)
    rewards = redistribution.td(*args, first_token=knobs.first_token, beta_c=knobs.beta_c)
    target = redistribution.td_total(*args, first_token=knobs.first_token, beta_c=knobs.beta_c)
    return Credit(rewards, target)


def check(knobs: TDConfig) -> list[Problem]:
    problems: list[Problem] = []
    if knobs.first_token not in redistribution.TD_FIRST_TOKEN:
        problems.append(("first_token", knobs.first_token,
                         "must be one of " + ", ".join(redistribution.TD_FIRST_TOKEN)))
    if not 0.0 <= knobs.beta_c <= 1.0:
        problems.append(("beta_c", knobs.beta_c, "must be in [0, 1]"))
    return problems


MODE = Mode(name="td", knobs=TDConfig, needs=frozenset({PREFIX_SCORES}), dense=True, apply=apply,
            check=check, summary="RED: differences of the RM's own prefix scores")
