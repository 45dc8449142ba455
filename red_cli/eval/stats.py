"""Statistics of `red eval` and `red report`: win rates with bootstrap intervals, and means
with two standard errors over seeds. Numbers in, numbers out (numpy only)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np


class WinRate(NamedTuple):
    """Pairwise outcome counts and the win rate with its bootstrap interval.

    win_rate = (wins + ties / 2) / n; [ci_low, ci_high] is the central ``confidence``
    percentile interval of the win rate over bootstrap resamples of the n prompts.
    """

    n: int
    wins: int
    ties: int
    losses: int
    win_rate: float
    ci_low: float
    ci_high: float


def outcome_from_scores(candidate: float, baseline: float, tie_margin: float = 0.0) -> float:
    """1 if the candidate's score is higher by more than ``tie_margin``, 0 if lower, else 0.5."""
    diff = candidate - baseline
    if diff > tie_margin:
        return 1.0
    if diff < -tie_margin:
        return 0.0
    return 0.5


def win_rate(outcomes: Sequence[float]) -> float:
    """Mean outcome: (wins + ties / 2) / n, outcomes in {0, 0.5, 1}."""
    if len(outcomes) == 0:
        return float("nan")
    return float(np.mean(np.asarray(outcomes, dtype=np.float64)))


def bootstrap_ci(outcomes: Sequence[float], samples: int = 2000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean outcome (Efron & Tibshirani 1993, ch. 13).

    Draw ``samples`` resamples of the n prompts with replacement (numpy PCG64 seeded with
    ``seed``), take each resample's win rate, and return its (1 - confidence) / 2 and
    (1 + confidence) / 2 quantiles (linear interpolation). n = 0 gives (nan, nan).
    """
    x = np.asarray(outcomes, dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    rates = x[rng.integers(0, x.size, size=(samples, x.size))].mean(axis=1)
    alpha = 1.0 - confidence
    low, high = np.quantile(rates, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def summarize(outcomes: Sequence[float], samples: int = 2000, confidence: float = 0.95,
              seed: int = 0) -> WinRate:
    x = np.asarray(outcomes, dtype=np.float64)
    low, high = bootstrap_ci(x, samples, confidence, seed)
    return WinRate(n=int(x.size), wins=int((x == 1.0).sum()), ties=int((x == 0.5).sum()),
                   losses=int((x == 0.0).sum()), win_rate=win_rate(x), ci_low=low, ci_high=high)


def mean_2se(values: Sequence[float]) -> tuple[float, float]:
    """(mean, 2 * standard error) of seed values; 2SE is nan with fewer than two values."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    if x.size == 1:
        return float(x[0]), float("nan")
    return float(x.mean()), float(2 * x.std(ddof=1) / math.sqrt(x.size))
