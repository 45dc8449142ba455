"""PPO-Lagrangian: the multiplier's update and the combined advantage, by hand and against a
plain-loop twin (an SGD step on log lambda through autograd, as safe-rlhf takes it)."""

from __future__ import annotations

import math
import random

import pytest
import torch

from red_cli.rlhf.lagrangian import CostWindow, Lagrangian, combine_advantages, lagrange_step


def sgd_on_log_lambda(lam, mean_cost, limit, lr, lam_max=None):
    """safe-rlhf's step, spelled out: loss = -(c - d) * exp(log lambda), one SGD step."""
    log_lambda = torch.tensor(math.log(lam), dtype=torch.float64, requires_grad=True)
    loss = -(mean_cost - limit) * log_lambda.exp()
    loss.backward()
    with torch.no_grad():
        log_lambda -= lr * log_lambda.grad
        if lam_max is not None:
            log_lambda.clamp_(max=math.log(lam_max))
    return math.exp(log_lambda.item())


def test_step_by_hand():
    # lambda 1, cost 1.5 over a limit of 0.5, lr 0.1: log lambda = 0 + 0.1 * 1 * 1 = 0.1.
    assert lagrange_step(1.0, 1.5, 0.5, 0.1) == pytest.approx(math.exp(0.1), abs=1e-15)
    # Under the limit it shrinks: lambda 2, cost 0, limit 1: log 2 - 0.1 * 2 = log 2 - 0.2.
    assert lagrange_step(2.0, 0.0, 1.0, 0.1) == pytest.approx(2 * math.exp(-0.2), abs=1e-15)
    # At the limit it stays.
    assert lagrange_step(3.0, 0.7, 0.7, 0.5) == pytest.approx(3.0, rel=1e-15)
    # Capped at lambda_max: 4 * exp(0.1 * 4 * 10) = 4 e^4 > 5.
    assert lagrange_step(4.0, 10.0, 0.0, 0.1, lam_max=5.0) == pytest.approx(5.0, abs=1e-12)
    # 0 is a fixed point (the unconstrained control), however far over the limit.
    assert lagrange_step(0.0, 100.0, 0.0, 1.0) == 0.0
    # A huge step saturates instead of overflowing.
    assert math.isfinite(lagrange_step(1.0, 1e6, 0.0, 1.0))
    with pytest.raises(ValueError, match=">= 0"):
        lagrange_step(-0.1, 1.0, 0.0, 0.1)


def test_step_matches_sgd_on_log_lambda():
    rng = random.Random(0)
    for _ in range(200):
        lam = math.exp(rng.uniform(-3, 2))
        cost, limit, lr = rng.uniform(-2, 3), rng.uniform(-1, 1), rng.uniform(0.001, 0.5)
        lam_max = rng.choice([None, math.exp(rng.uniform(0, 2))])
        if lam_max is not None and lam > lam_max:
            continue
        assert lagrange_step(lam, cost, limit, lr, lam_max) == pytest.approx(
            sgd_on_log_lambda(lam, cost, limit, lr, lam_max), rel=1e-12)


def test_combined_advantage_by_hand_and_loop():
    a_r = torch.tensor([[1.0, 2.0, 0.0], [-1.0, 4.0, 3.0]])
    a_c = torch.tensor([[0.5, -2.0, 0.0], [1.0, 0.0, -3.0]])
    # lambda 1: (a_r - a_c) / 2.
    assert combine_advantages(a_r, a_c, 1.0).tolist() == [[0.25, 2.0, 0.0], [-1.0, 2.0, 3.0]]
    # lambda 0: the reward's advantage unchanged.
    assert torch.equal(combine_advantages(a_r, a_c, 0.0), a_r)
    lam = 3.0
    out = combine_advantages(a_r, a_c, lam)
    for i in range(2):
        for t in range(3):
            assert out[i, t].item() == pytest.approx(
                (a_r[i, t].item() - lam * a_c[i, t].item()) / (1 + lam))


def test_window_keeps_the_last_episodes():
    w = CostWindow(3)
    with pytest.raises(ValueError, match="no episode"):
        w.mean()
    w.extend([1.0, 2.0])
    assert w.mean() == 1.5
    w.extend([3.0, 4.0, 5.0])
    assert list(w.costs) == [3.0, 4.0, 5.0] and w.mean() == 4.0
    with pytest.raises(ValueError, match="size"):
        CostWindow(0)


def test_lagrangian_delay_window_and_state():
    lag = Lagrangian(limit=1.0, lambda_init=1.0, lr=0.1, lambda_max=None, window=4,
                     update_delay=1)
    # Iteration 0 is inside the delay: the window fills, lambda stays.
    assert lag.update(0, [2.0, 2.0]) == 2.0 and lag.value == 1.0
    # Iteration 1: window [2, 2, 4, 4], mean 3 > 1: log lambda += 0.1 * 1 * 2.
    assert lag.update(1, [4.0, 4.0]) == 3.0
    assert lag.value == pytest.approx(math.exp(0.2), abs=1e-15)
    state = lag.state_dict()
    twin = Lagrangian(1.0, 1.0, 0.1, None, 4, 1)
    twin.load_state_dict(state)
    for it in range(2, 6):
        costs = [0.1 * it, 0.5]
        assert lag.update(it, costs) == twin.update(it, costs)
        assert lag.value == twin.value
