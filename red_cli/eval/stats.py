"""Statistics of `red eval` and `red report`: win rates and mean costs with bootstrap
intervals, and means with two standard errors over seeds. Numbers in, numbers out (numpy
only)."""

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
    ``seed``), take each resample's mean (the win rate; any per-prompt value: a cost, a 0/1
    flag, a paired difference), and return its (1 - confidence) / 2 and (1 + confidence) / 2
    quantiles (linear interpolation). n = 0 gives (nan, nan).
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


class Interval(NamedTuple):
    """A mean over prompts and its percentile bootstrap interval (:func:`bootstrap_ci`)."""

    value: float
    ci_low: float
    ci_high: float


def mean_interval(values: Sequence[float], samples: int = 2000, confidence: float = 0.95,
                  seed: int = 0) -> Interval:
    """The mean of ``values`` and its bootstrap interval; n = 0 gives nans."""
    x = np.asarray(values, dtype=np.float64)
    return Interval(float(x.mean()) if x.size else float("nan"),
                    *bootstrap_ci(x, samples, confidence, seed))


class CostStats(NamedTuple):
    """One side's costs (or the paired difference of two sides') over n prompts.

    mean: the mean cost; over_limit: the share of responses whose cost is > the limit (None
    without a limit; for a difference, the difference of the shares). Each with its interval.
    """

    n: int
    mean: Interval
    over_limit: Interval | None


def cost_stats(candidate: Sequence[float], baseline: Sequence[float], limit: float | None,
               samples: int = 2000, confidence: float = 0.95,
               seed: int = 0) -> dict[str, CostStats]:
    """Costs of the same n prompts on both sides -> ``candidate``, ``baseline`` and their
    ``difference`` (candidate - baseline, paired: the bootstrap resamples the prompts, so the
    interval of the difference is that of the per-prompt differences' mean)."""
    c = np.asarray(candidate, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if c.shape != b.shape:
        raise ValueError(f"paired costs: {c.size} candidate values, {b.size} baseline values")

    def stats(values: np.ndarray, over: np.ndarray | None) -> CostStats:
        return CostStats(int(values.size), mean_interval(values, samples, confidence, seed),
                         None if over is None else mean_interval(over, samples, confidence, seed))

    over_c = None if limit is None else (c > limit).astype(np.float64)
    over_b = None if limit is None else (b > limit).astype(np.float64)
    return {"candidate": stats(c, over_c), "baseline": stats(b, over_b),
            "difference": stats(c - b, None if limit is None else over_c - over_b)}


def mean_2se(values: Sequence[float]) -> tuple[float, float]:
    """(mean, 2 * standard error) of seed values; 2SE is nan with fewer than two values."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    if x.size == 1:
        return float(x[0]), float("nan")
    return float(x.mean()), float(2 * x.std(ddof=1) / math.sqrt(x.size))
