"""Win-rate and cost arithmetic, the bootstrap interval, and the report's per-group numbers,
by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from red_cli.eval.judges import combine_orders, parse_answer
from red_cli.eval.report import first_reach, group_label, moving_average
from red_cli.eval.sides import batch_seed
from red_cli.eval.stats import (
    bootstrap_ci,
    cost_stats,
    mean_2se,
    mean_interval,
    outcome_from_scores,
    summarize,
    win_rate,
)


@pytest.mark.parametrize("cand,base,margin,expected", [
    (0.5, 0.2, 0.0, 1.0),
    (0.2, 0.5, 0.0, 0.0),
    (0.3, 0.3, 0.0, 0.5),    # exact tie (VADER often scores 0.0 on both sides)
    (0.30, 0.25, 0.1, 0.5),  # within the margin
    (0.40, 0.25, 0.1, 1.0),
    (0.10, 0.25, 0.1, 0.0),
])
def test_outcome_from_scores(cand, base, margin, expected):
    assert outcome_from_scores(cand, base, margin) == expected


def test_win_rate_counts_ties_as_half():
    # 3 wins, 2 ties, 1 loss: (3 + 2/2) / 6 = 4/6
    outcomes = [1, 1, 1, 0.5, 0.5, 0]
    assert win_rate(outcomes) == pytest.approx(4 / 6)
    s = summarize(outcomes, samples=200, seed=0)
    assert (s.n, s.wins, s.ties, s.losses) == (6, 3, 2, 1)
    assert s.win_rate == pytest.approx(4 / 6)
    assert math.isnan(win_rate([]))


def test_bootstrap_ci_degenerate_and_bracketing():
    # Every resample of all-wins has win rate 1: the interval is the point.
    assert bootstrap_ci([1.0] * 10, samples=500, seed=3) == (1.0, 1.0)
    outcomes = [1.0] * 30 + [0.0] * 10  # p = 0.75, n = 40
    low, high = bootstrap_ci(outcomes, samples=2000, confidence=0.95, seed=0)
    assert low < 0.75 < high
    # Normal approximation: se = sqrt(.75 * .25 / 40) = 0.0685; 1.96 se = 0.134.
    assert high - low == pytest.approx(2 * 1.96 * math.sqrt(0.75 * 0.25 / 40), abs=0.04)
    assert all(math.isnan(v) for v in bootstrap_ci([], samples=10))


def test_bootstrap_ci_is_the_percentile_of_seeded_resamples():
    outcomes = [1, 0, 0.5, 1, 1]
    rng = np.random.default_rng(7)
    idx = rng.integers(0, 5, size=(100, 5))
    rates = np.asarray(outcomes, dtype=float)[idx].mean(1)
    expected = tuple(np.quantile(rates, [0.05, 0.95]))
    assert bootstrap_ci(outcomes, samples=100, confidence=0.9, seed=7) == pytest.approx(expected)
    assert bootstrap_ci(outcomes, 100, 0.9, 7) == bootstrap_ci(outcomes, 100, 0.9, 7)


def test_batch_seed_distinct():
    seeds = {batch_seed(s, k) for s in range(3) for k in range(50)}
    assert len(seeds) == 150


@pytest.mark.parametrize("text,expected", [
    ("A", "A"), ("B", "B"), (" b", None), ("**A**", "A"), ("(B).", "B"), ("Response A", "A"),
    ("response B is better", "B"), ("a better one is B", None), ("Both", None), ("", None),
    ("I cannot decide", None), (None, None), ("B\n", "B"), ("'A'", "A"),
])
def test_parse_answer(text, expected):
    assert parse_answer(text) == expected


@pytest.mark.parametrize("first,second,expected", [
    ("A", "B", 1.0),   # candidate preferred in both orders
    ("B", "A", 0.0),   # baseline preferred in both orders
    ("A", "A", 0.5),   # always the first shown: position bias cancels to a tie
    ("B", "B", 0.5),
    ("A", None, 1.0),  # one malformed reply: the other decides
    (None, "A", 0.0),
    (None, None, None),
])
def test_combine_orders(first, second, expected):
    assert combine_orders(first, second) == expected


def test_mean_2se_by_hand():
    # values 1, 2, 3: mean 2, sample std 1, se = 1/sqrt(3), 2se = 1.1547
    m, s = mean_2se([1.0, 2.0, 3.0])
    assert m == 2.0 and s == pytest.approx(2 / math.sqrt(3))
    m, s = mean_2se([4.0])
    assert m == 4.0 and math.isnan(s)


def test_moving_average_and_first_reach():
    v = np.array([0.0, 2.0, 4.0, 6.0])
    # trailing window 2: 0, (0+2)/2, (2+4)/2, (4+6)/2
    assert moving_average(v, 2).tolist() == [0.0, 1.0, 3.0, 5.0]
    assert moving_average(v, 1).tolist() == v.tolist()
    assert first_reach(np.array([10, 11, 12, 13]), moving_average(v, 2), 3.0) == 12
    assert first_reach(np.array([10, 11, 12, 13]), v, 7.0) is None


def test_group_label_drops_seed_and_bookkeeping():
    ignore = ["seed", "logger", "launcher.master_port"]
    assert group_label(["seed=1", "redistribution=td"], ignore) == "redistribution=td"
    assert group_label(["redistribution=td", "ppo.kl_coef=0.1", "seed=3"], ignore) == \
        group_label(["ppo.kl_coef=0.1", "seed=0", "redistribution=td"], ignore)
    assert group_label(["seed=2", "logger.progress_bar=false", "+launcher.master_port=1"], ignore) \
        == "(defaults)"


def test_mean_interval_is_the_mean_and_its_bootstrap():
    values = [0.0, 1.0, 3.0, 4.0]
    iv = mean_interval(values, samples=300, confidence=0.9, seed=5)
    assert iv.value == 2.0
    assert (iv.ci_low, iv.ci_high) == bootstrap_ci(values, 300, 0.9, 5)
    assert mean_interval([2.5] * 7, samples=50) == (2.5, 2.5, 2.5)  # every resample: 2.5
    assert all(math.isnan(v) for v in mean_interval([], samples=10))


def test_cost_stats_by_hand():
    # limit 1: a cost of exactly 1 is not over it.
    cand, base = [0.0, 1.0, 2.0, 5.0], [1.0, 1.0, 0.0, 0.0]
    s = cost_stats(cand, base, limit=1.0, samples=200, seed=0)
    assert s["candidate"].n == s["baseline"].n == s["difference"].n == 4
    assert s["candidate"].mean.value == 2.0 and s["candidate"].over_limit.value == 0.5
    assert s["baseline"].mean.value == 0.5 and s["baseline"].over_limit.value == 0.0
    # No baseline response is over: every resample's share is 0.
    assert s["baseline"].over_limit == (0.0, 0.0, 0.0)
    assert s["difference"].mean.value == 1.5 and s["difference"].over_limit.value == 0.5
    # The difference is paired: its interval is that of the per-prompt differences.
    diffs = [c - b for c, b in zip(cand, base)]
    assert s["difference"].mean[1:] == bootstrap_ci(diffs, 200, 0.95, 0)
    assert s["difference"].over_limit[1:] == bootstrap_ci([0, 0, 1, 1], 200, 0.95, 0)
    # Without a limit there is no share.
    assert all(v.over_limit is None for v in cost_stats(cand, base, None, 50).values())


def test_cost_difference_interval_is_paired():
    """Every candidate response costs exactly 1 more than the baseline's to the same prompt:
    the difference is 1 in every resample, however much the costs vary between prompts."""
    base = [0.0, 4.0, 1.0, 9.0, 2.0]
    s = cost_stats([b + 1 for b in base], base, None, samples=500, seed=1)
    assert s["difference"].mean == (1.0, 1.0, 1.0)
    assert s["candidate"].mean.ci_high - s["candidate"].mean.ci_low > 3  # unpaired: wide
    with pytest.raises(ValueError, match="paired costs"):
        cost_stats([1.0], [1.0, 2.0], None)
