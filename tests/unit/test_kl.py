"""KL estimators, KL-in-the-reward shaping and the KL controllers."""

import json
import math

import pytest
import torch

from red_cli.rlhf.kl import (
    KL_ESTIMATORS,
    AdaptiveKLController,
    FixedKLController,
    add_kl_to_rewards,
    k1,
    k2,
    k3,
    kl_penalty,
)
from tests.unit.masks import random_masks

SHAPES = [(8, 1), (8, 5), (8, 12)]


def loop_kl_shaped(rewards, logprobs, ref_logprobs, mask, kl_coef, estimator):
    formulas = {
        "k1": lambda lp, rf: lp - rf,
        "k2": lambda lp, rf: 0.5 * (lp - rf) ** 2,
        "k3": lambda lp, rf: (math.exp(rf - lp) - 1) - (rf - lp),
    }
    out_rewards, out_kl = [], []
    for rs, lps, rfs, ms in zip(
        rewards.tolist(), logprobs.tolist(), ref_logprobs.tolist(), mask.tolist()
    ):
        kl_row = [formulas[estimator](lp, rf) if m else 0.0 for lp, rf, m in zip(lps, rfs, ms)]
        out_kl.append(kl_row)
        out_rewards.append([r - kl_coef * k if m else 0.0 for r, k, m in zip(rs, kl_row, ms)])
    return torch.tensor(out_rewards, dtype=torch.float64), torch.tensor(out_kl, dtype=torch.float64)


def test_estimators_by_hand():
    # pi = 0.5, pi_ref = 0.25: log ratio = log 2 = 0.693147.
    logp = torch.tensor([math.log(0.5)], dtype=torch.float64)
    ref = torch.tensor([math.log(0.25)], dtype=torch.float64)
    assert k1(logp, ref).item() == pytest.approx(0.693147, abs=1e-6)
    # 0.5 * 0.693147^2 = 0.240227
    assert k2(logp, ref).item() == pytest.approx(0.240227, abs=1e-6)
    # pi_ref / pi = 0.5: (0.5 - 1) - log 0.5 = -0.5 + 0.693147 = 0.193147
    assert k3(logp, ref).item() == pytest.approx(0.193147, abs=1e-6)
    assert set(KL_ESTIMATORS) == {"k1", "k2", "k3"}


def test_k2_k3_are_non_negative_and_zero_at_equality():
    g = torch.Generator().manual_seed(0)
    logp, ref = -torch.rand(2, 50, generator=g, dtype=torch.float64) * 5
    assert (k2(logp, ref) >= 0).all() and (k3(logp, ref) >= 0).all()
    for estimator in (k1, k2, k3):
        assert (estimator(logp, logp) == 0).all()


def test_k1_and_k3_are_unbiased_estimates_of_kl():
    # Sample y ~ pi and average: both estimate KL(pi || pi_ref) = sum pi log(pi / pi_ref).
    pi = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    ref = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    # 0.5 log 2.5 + 0 + 0.2 log 0.4 = 0.458145 - 0.183258 = 0.274887
    true_kl = (pi * (pi / ref).log()).sum().item()
    assert true_kl == pytest.approx(0.274887, abs=1e-6)
    g = torch.Generator().manual_seed(0)
    y = torch.multinomial(pi, 200_000, replacement=True, generator=g)
    # The per-sample spread is below 1, so the standard error is ~0.002; 0.01 is 5 SE.
    assert k1(pi.log()[y], ref.log()[y]).mean().item() == pytest.approx(true_kl, abs=0.01)
    assert k3(pi.log()[y], ref.log()[y]).mean().item() == pytest.approx(true_kl, abs=0.01)


def test_kl_penalty_is_zero_on_padding_even_with_garbage():
    logp = torch.tensor([[-1.0, -float("inf")]])
    ref = torch.tensor([[-2.0, -3.0]])
    mask = torch.tensor([[True, False]])
    for estimator in KL_ESTIMATORS:
        kl = kl_penalty(logp, ref, mask, estimator)
        assert torch.isfinite(kl).all() and kl[0, 1] == 0


def test_unknown_estimator_lists_choices():
    with pytest.raises(ValueError, match="'k4'.*k1.*k2.*k3"):
        kl_penalty(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1, dtype=torch.bool), "k4")


def test_add_kl_to_rewards_by_hand():
    # log ratios 0.2, -0.1, 0.5 on real tokens (9 on padding); kl_coef 0.1, k1:
    # 0 - 0.02, 0 + 0.01, 1 - 0.05 -> -0.02, 0.01, 0.95; padding 0.
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]], dtype=torch.float64)
    logp = torch.tensor([[0.2, -0.1, 0.5, 9.0]], dtype=torch.float64) - 1.0
    ref = torch.full_like(logp, -1.0)
    mask = torch.tensor([[True, True, True, False]])
    out = add_kl_to_rewards(rewards, logp, ref, mask, kl_coef=0.1, estimator="k1")
    torch.testing.assert_close(out.rewards, torch.tensor([[-0.02, 0.01, 0.95, 0.0]]).double())
    torch.testing.assert_close(out.kl, torch.tensor([[0.2, -0.1, 0.5, 0.0]]).double())


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_add_kl_to_rewards_matches_loop_twin(shape, estimator):
    g = torch.Generator().manual_seed(shape[1])
    mask = random_masks(*shape, g)
    rewards = torch.randn(shape, generator=g, dtype=torch.float64)
    logp = -torch.rand(shape, generator=g, dtype=torch.float64) * 4
    ref = -torch.rand(shape, generator=g, dtype=torch.float64) * 4
    out = add_kl_to_rewards(rewards, logp, ref, mask, 0.05, estimator)
    expected_rewards, expected_kl = loop_kl_shaped(rewards, logp, ref, mask, 0.05, estimator)
    torch.testing.assert_close(out.rewards, expected_rewards)
    torch.testing.assert_close(out.kl, expected_kl)


def test_adaptive_controller_by_hand():
    # The ABC paper's settings: init 0.2, target 6, horizon 10000.
    ctl = AdaptiveKLController(init_kl_coef=0.2, target=6.0, horizon=10000)
    # KL 9: error 9 / 6 - 1 = 0.5, clipped to 0.2; mult 1 + 0.2 * 256 / 10000 = 1.00512.
    ctl.update(current_kl=9.0, n_steps=256)
    assert ctl.value == pytest.approx(0.2 * 1.00512)  # 0.201024
    # KL 5.4: error 0.9 - 1 = -0.1 (inside the clip); mult 1 - 0.1 * 1000 / 10000 = 0.99.
    ctl.update(current_kl=torch.tensor(5.4), n_steps=1000)
    assert ctl.value == pytest.approx(0.201024 * 0.99)  # 0.19901376
    # KL 0: error -1 clipped to -0.2; mult 1 - 0.2 * 10000 / 10000 = 0.8.
    ctl.update(current_kl=0.0, n_steps=10000)
    assert ctl.value == pytest.approx(0.19901376 * 0.8)  # 0.159211008


def test_fixed_controller_never_moves():
    ctl = FixedKLController(0.02)
    ctl.update(current_kl=100.0, n_steps=10_000)
    assert ctl.value == 0.02
    ctl.load_state_dict({"value": 0.1})
    assert ctl.value == 0.1 and ctl.state_dict() == {"value": 0.1}


@pytest.mark.parametrize(
    "make", [lambda: AdaptiveKLController(0.2, 6.0, 10000), lambda: FixedKLController(0.05)]
)
def test_controller_state_dict_resumes_exactly(make):
    updates = [(9.0, 256), (5.4, 256), (1.0, 512), (7.0, 128)]
    uninterrupted = make()
    for kl, n in updates:
        uninterrupted.update(kl, n)

    first_half = make()
    for kl, n in updates[:2]:
        first_half.update(kl, n)
    # Through JSON, as a checkpoint file would store it.
    state = json.loads(json.dumps(first_half.state_dict()))
    resumed = make()
    resumed.load_state_dict(state)
    for kl, n in updates[2:]:
        resumed.update(kl, n)
    assert resumed.value == uninterrupted.value  # exact, not approx


def test_adaptive_controller_rejects_bad_target():
    with pytest.raises(ValueError, match="target"):
        AdaptiveKLController(0.2, target=0.0, horizon=10000)
