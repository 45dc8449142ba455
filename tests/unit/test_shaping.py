"""ScoreShaper: normalisation statistics and the affine-then-clip map, worked out by hand
(world_size=1: the gather is a no-op)."""

import math
import statistics

import pytest
import torch

from red_cli.reward.shaping import ScoreShaper


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


# ---------------------------------------------------------------- norm="none"


def test_none_fit_is_shift_0_scale_1_and_keeps_no_statistics():
    shaper = ScoreShaper("none", None, None)
    assert shaper.fit(t(1.0, 2.0, 30.0), 1) == (0.0, 1.0)
    assert shaper.state_dict() == {"count": 0, "mean": 0.0, "m2": 0.0}


def test_none_without_clip_is_identity():
    shaper = ScoreShaper("none", None, 5.0)  # the penalty is the pipeline's, not transform's
    x = t(-100.0, -0.5, 0.0, 3.25, 1e6)
    shift, scale = shaper.fit(x, 1)
    assert torch.equal(shaper.transform(x, shift, scale), x)


def test_none_with_clip_clamps_only_beyond_the_bound():
    shaper = ScoreShaper("none", 2.0, None)
    x = t(-5.0, -2.0, -1.5, 0.0, 1.9, 2.0, 3.0)
    shift, scale = shaper.fit(x, 1)
    # |x| <= 2 unchanged; -5 -> -2, 3 -> 2.
    assert torch.equal(shaper.transform(x, shift, scale), t(-2.0, -2.0, -1.5, 0.0, 1.9, 2.0, 2.0))


def test_clip_applies_after_the_affine_map():
    shaper = ScoreShaper("batch", 1.0, None)
    # (x - 3) / 2: 6 -> 1.5 -> clipped to 1; 1 -> -1 (on the bound); 4 -> 0.5; 0 -> -1.5 -> -1.
    # Clipping before the map would give (1 - 3) / 2 = -1 for 6 instead.
    out = shaper.transform(t(6.0, 1.0, 4.0, 0.0), 3.0, 2.0)
    assert torch.equal(out, t(1.0, -1.0, 0.5, -1.0))


# ---------------------------------------------------------------- norm="batch"


def test_batch_fit_is_mean_and_unbiased_std():
    shaper = ScoreShaper("batch", None, None)
    # [1, 2, 3, 6]: mean 12 / 4 = 3; squared deviations 4 + 1 + 0 + 9 = 14;
    # unbiased variance 14 / 3, std sqrt(14 / 3) ~ 2.1602 (biased std would be sqrt(3.5) ~ 1.87).
    shift, scale = shaper.fit(t(1.0, 2.0, 3.0, 6.0), 1)
    assert shift == pytest.approx(3.0)
    assert scale == pytest.approx(math.sqrt(14 / 3))
    out = shaper.transform(t(1.0, 2.0, 3.0, 6.0), shift, scale)
    s = math.sqrt(14 / 3)
    assert out.tolist() == pytest.approx([-2 / s, -1 / s, 0.0, 3 / s])


def test_batch_statistics_are_this_batch_only():
    shaper = ScoreShaper("batch", None, None)
    shaper.fit(t(100.0, 200.0, 300.0), 1)
    # Second batch [0, 2]: mean 1, unbiased std sqrt((1 + 1) / 1) = sqrt(2); nothing carried over.
    assert shaper.fit(t(0.0, 2.0), 1) == pytest.approx((1.0, math.sqrt(2.0)))
    assert shaper.state_dict() == {"count": 0, "mean": 0.0, "m2": 0.0}


def test_batch_of_one_gets_the_scale_floor():
    shaper = ScoreShaper("batch", None, None)
    # n = 1: m2 = 0 and the divisor is max(n - 1, 1) = 1 (no ZeroDivisionError), std 0 -> 1e-6.
    shift, scale = shaper.fit(t(4.5), 1)
    assert (shift, scale) == (4.5, 1e-6)
    assert shaper.transform(t(4.5), shift, scale).tolist() == [0.0]


def test_constant_batch_gets_the_scale_floor_and_no_nan():
    shaper = ScoreShaper("batch", None, None)
    shift, scale = shaper.fit(t(5.0, 5.0, 5.0), 1)
    assert (shift, scale) == (5.0, 1e-6)
    out = shaper.transform(t(5.0, 5.0, 5.0), shift, scale)
    assert torch.equal(out, torch.zeros(3, dtype=torch.float64))


def test_small_nonzero_std_is_not_floored():
    shaper = ScoreShaper("batch", None, None)
    # [0, 2e-6]: mean 1e-6, unbiased std sqrt(2 * 1e-12) = sqrt(2) * 1e-6 > 1e-6: kept.
    _, scale = shaper.fit(t(0.0, 2e-6), 1)
    assert scale == pytest.approx(math.sqrt(2) * 1e-6, rel=1e-9)


# ---------------------------------------------------------------- norm="running"

BATCHES = [[1.0, 2.0], [3.0, 6.0, 10.0], [-4.0], [0.5, 0.5, 7.0, -2.0]]


def loop_running(batches):
    """Plain-Python twin: (mean, unbiased std floored at 1e-6) of everything seen so far."""
    seen, out = [], []
    for batch in batches:
        seen += batch
        std = statistics.stdev(seen) if len(seen) > 1 else 0.0
        out.append((statistics.fmean(seen), max(std, 1e-6)))
    return out


def test_running_matches_the_concatenation_after_each_batch():
    shaper = ScoreShaper("running", None, None)
    got = [shaper.fit(t(*b), 1) for b in BATCHES]
    want = loop_running(BATCHES)
    for (gm, gs), (wm, ws) in zip(got, want):
        assert gm == pytest.approx(wm, rel=1e-12)
        assert gs == pytest.approx(ws, rel=1e-12)
    # By hand after the first two batches: [1, 2, 3, 6, 10], mean 22 / 5 = 4.4; squared
    # deviations 11.56 + 5.76 + 1.96 + 2.56 + 31.36 = 53.2; unbiased variance 53.2 / 4 = 13.3.
    assert got[1] == pytest.approx((4.4, math.sqrt(13.3)))
    assert shaper.count == sum(len(b) for b in BATCHES)


def test_running_first_batch_of_one_gets_the_floor():
    shaper = ScoreShaper("running", None, None)
    assert shaper.fit(t(3.0), 1) == (3.0, 1e-6)
    # Then [5]: seen [3, 5], mean 4, unbiased std sqrt(2).
    assert shaper.fit(t(5.0), 1) == pytest.approx((4.0, math.sqrt(2.0)))


def test_running_state_round_trip_continues_exactly():
    original = ScoreShaper("running", None, None)
    for b in BATCHES[:2]:
        original.fit(t(*b), 1)
    state = original.state_dict()

    restored = ScoreShaper("running", None, None)
    restored.load_state_dict(state)
    fresh = ScoreShaper("running", None, None)

    nxt = t(*BATCHES[2] + BATCHES[3])
    want = original.fit(nxt, 1)
    assert restored.fit(nxt, 1) == want  # bit for bit: same arithmetic from the same state
    assert restored.state_dict() == original.state_dict()
    # Without the state the next batch alone would be normalised differently.
    assert fresh.fit(nxt, 1) != pytest.approx(want)
    assert want == pytest.approx(loop_running(BATCHES[:2] + [BATCHES[2] + BATCHES[3]])[-1])
