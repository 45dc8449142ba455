"""GAE: hand-worked values, a per-row plain-loop twin, and the discount warning."""

import pytest
import torch

from red_cli.rlhf import redistribution
from red_cli.rlhf.gae import compute_gae
from tests.unit.masks import random_masks

SHAPES = [(8, 1), (8, 5), (8, 12)]


def loop_gae(rewards, values, mask, gamma, lam):
    """Per row: walk the real tokens backwards; the state after the last one is terminal."""
    advantages, returns = [], []
    for rs, vs, ms in zip(rewards.tolist(), values.tolist(), mask.tolist()):
        real = [t for t, m in enumerate(ms) if m]
        adv = [0.0] * len(ms)
        ret = [0.0] * len(ms)
        next_value, next_adv = 0.0, 0.0
        for t in reversed(real):
            delta = rs[t] + gamma * next_value - vs[t]
            adv[t] = delta + gamma * lam * next_adv
            ret[t] = adv[t] + vs[t]
            next_value, next_adv = vs[t], adv[t]
        advantages.append(adv)
        returns.append(ret)
    return torch.tensor(advantages, dtype=torch.float64), torch.tensor(returns, dtype=torch.float64)


def test_gae_by_hand():
    # r = [0, 1], V = [0.5, 0.6], gamma 0.9, lambda 0.95:
    # t=1: delta = 1 + 0.9 * 0 (terminal) - 0.6 = 0.4; A = 0.4; R = 1.0
    # t=0: delta = 0 + 0.9 * 0.6 - 0.5 = 0.04; A = 0.04 + 0.9 * 0.95 * 0.4 = 0.382; R = 0.882
    rewards = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    values = torch.tensor([[0.5, 0.6]], dtype=torch.float64)
    out = compute_gae(rewards, values, torch.ones(1, 2, dtype=torch.bool), 0.9, 0.95)
    torch.testing.assert_close(out.advantages, torch.tensor([[0.382, 0.4]]).double())
    torch.testing.assert_close(out.returns, torch.tensor([[0.882, 1.0]]).double())


def test_padding_is_terminal_and_zero():
    # Same episode as above, padded at the end and, in row 1, shifted to start at index 1.
    # The padding values (100) and rewards (50) must change nothing: V after the last real
    # token counts as 0.
    rewards = torch.tensor([[0.0, 1.0, 50.0], [50.0, 0.0, 1.0]], dtype=torch.float64)
    values = torch.tensor([[0.5, 0.6, 100.0], [100.0, 0.5, 0.6]], dtype=torch.float64)
    mask = torch.tensor([[True, True, False], [False, True, True]])
    out = compute_gae(rewards, values, mask, 0.9, 0.95)
    torch.testing.assert_close(
        out.advantages, torch.tensor([[0.382, 0.4, 0.0], [0.0, 0.382, 0.4]]).double()
    )
    torch.testing.assert_close(
        out.returns, torch.tensor([[0.882, 1.0, 0.0], [0.0, 0.882, 1.0]]).double()
    )


def test_gamma_one_lambda_one_returns_are_reward_to_go():
    # With gamma = lambda = 1 the values telescope away: R_t = sum_{s >= t} r_s.
    # r = [1, -2, 3] -> [2, 1, 3], whatever the values.
    rewards = torch.tensor([[1.0, -2.0, 3.0]], dtype=torch.float64)
    values = torch.tensor([[7.0, -4.0, 0.25]], dtype=torch.float64)
    out = compute_gae(rewards, values, torch.ones(1, 3, dtype=torch.bool), 1.0, 1.0)
    torch.testing.assert_close(out.returns, torch.tensor([[2.0, 1.0, 3.0]]).double())


def test_lambda_zero_is_one_step_td():
    # A_t = r_t + gamma V_{t+1} - V_t: 1 + 0.5 * 2 - 1 = 1, then -1 + 0 - 2 = -3.
    rewards = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    values = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    out = compute_gae(rewards, values, torch.ones(1, 2, dtype=torch.bool), 0.5, 0.0)
    torch.testing.assert_close(out.advantages, torch.tensor([[1.0, -3.0]]).double())


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 0.95), (0.9, 0.5), (1.0, 1.0)])
def test_gae_matches_loop_twin(shape, gamma, lam):
    g = torch.Generator().manual_seed(shape[1])
    mask = random_masks(*shape, g)
    rewards = torch.randn(shape, generator=g, dtype=torch.float64)
    values = torch.randn(shape, generator=g, dtype=torch.float64)
    # NaN on padding must not leak (it would in a product-with-mask implementation).
    rewards = torch.where(mask, rewards, torch.nan)
    values = torch.where(mask, values, torch.nan)
    out = compute_gae(rewards, values, mask, gamma, lam)
    expected_advantages, expected_returns = loop_gae(rewards, values, mask, gamma, lam)
    torch.testing.assert_close(out.advantages, expected_advantages)
    torch.testing.assert_close(out.returns, expected_returns)


@pytest.mark.parametrize("lam", [0.0, 0.95, 1.0])
def test_sparse_with_potential_critic_has_td_advantages_with_zero_critic(lam):
    """Why td barely changes the toy runs (docs/RESULTS.md): with gamma = 1, a critic whose
    value before token t is the RM prefix score Phi_t = R(x, y<t) (R(x) before the first
    token) turns the sparse reward's TD errors into exactly td's per-token rewards,
    delta_t = Phi_{t+1} - Phi_t, so sparse + that critic has the advantages td has with V = 0."""
    torch.manual_seed(0)
    # Responses start at index 0 and end at their EOS (as the trainer's do).
    mask = torch.arange(10)[None, :] < torch.tensor([1, 10, 3, 7, 9, 2, 10, 5])[:, None]
    prefix = torch.randn(8, 10, dtype=torch.float64)  # R(x, y<=t) at each response token
    prompt = torch.randn(8, dtype=torch.float64)  # R(x)
    last = mask.long().cumsum(-1).argmax(-1)
    score = prefix[torch.arange(8), last]  # r_C = R(x, y), read at the last real token
    # V before token t: R(x) for t = 0, else R(x, y<=t-1).
    potential = torch.cat([prompt[:, None], prefix[:, :-1]], dim=1)
    sparse_adv, _ = compute_gae(redistribution.sparse(score, mask), potential, mask, 1.0, lam)
    td = redistribution.td(prefix, prompt, mask, first_token="prompt_baseline", beta_c=1.0)
    td_adv, _ = compute_gae(td, torch.zeros_like(potential), mask, 1.0, lam)
    torch.testing.assert_close(sparse_adv[mask], td_adv[mask])
