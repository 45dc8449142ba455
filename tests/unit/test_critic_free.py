"""REINFORCE++ returns, RLOO and GRPO baselines: hand-worked values and plain-loop twins."""

from __future__ import annotations

import math

import pytest
import torch

from red_cli.rlhf.critic_free import (
    grpo_advantages,
    per_token,
    rewards_to_go,
    rloo_advantages,
    whiten_with,
)
from tests.unit.masks import random_masks


def loop_rewards_to_go(rewards, mask, gamma):
    out = torch.zeros(rewards.shape, dtype=torch.float64)
    for i in range(rewards.shape[0]):
        running = 0.0
        for t in reversed(range(rewards.shape[1])):
            if mask[i, t]:
                running = float(rewards[i, t]) + gamma * running
                out[i, t] = running
            else:
                running = 0.0
    return out


def test_rewards_to_go_by_hand():
    # gamma 0.5: G_2 = 3, G_1 = 2 + 0.5 * 3 = 3.5, G_0 = 1 + 0.5 * 3.5 = 2.75; padding 0.
    rewards = torch.tensor([[1.0, 2.0, 3.0, 7.0], [9.0, 1.0, 1.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 0]], dtype=torch.bool)
    out = rewards_to_go(rewards, mask, gamma=0.5)
    assert out.tolist() == [[2.75, 3.5, 3.0, 0.0], [0.0, 1.5, 1.0, 0.0]]
    # gamma 1: the return from the first token is the row's sum of rewards.
    assert rewards_to_go(rewards, mask, 1.0)[:, :2].tolist() == [[6.0, 5.0], [0.0, 2.0]]


@pytest.mark.parametrize("gamma", [1.0, 0.9])
@pytest.mark.parametrize("shape", [(8, 1), (8, 6), (8, 13)])
def test_rewards_to_go_matches_loop(shape, gamma):
    gen = torch.Generator().manual_seed(shape[1])
    mask = random_masks(*shape, gen)
    rewards = torch.randn(shape, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(rewards_to_go(rewards, mask, gamma),
                               loop_rewards_to_go(rewards, mask, gamma))


def test_rloo_by_hand():
    # Group (1, 2, 3): 1 - (2 + 3) / 2 = -1.5, 2 - (1 + 3) / 2 = 0, 3 - (1 + 2) / 2 = 1.5;
    # a group of equal returns has no advantage.
    out = rloo_advantages(torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0, 10.0]), k=3)
    assert out.tolist() == [-1.5, 0.0, 1.5, 0.0, 0.0, 0.0]
    # k = 2: each one minus the other.
    assert rloo_advantages(torch.tensor([4.0, 1.0]), k=2).tolist() == [3.0, -3.0]


def test_grpo_by_hand():
    # (1, 2, 3): mean 2, unbiased std 1 -> (-1, 0, 1); (5, 5): std 0 -> 0 / eps = 0.
    out = grpo_advantages(torch.tensor([1.0, 2.0, 3.0]), k=3, eps=0.0)
    assert out.tolist() == [-1.0, 0.0, 1.0]
    assert grpo_advantages(torch.tensor([5.0, 5.0]), k=2).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("k", [2, 3, 4])
def test_group_baselines_match_loops(k):
    gen = torch.Generator().manual_seed(k)
    returns = torch.randn(5 * k, generator=gen, dtype=torch.float64)
    rloo, grpo = [], []
    for g in range(5):
        group = [float(r) for r in returns[g * k:(g + 1) * k]]
        mean = sum(group) / k
        std = math.sqrt(sum((r - mean) ** 2 for r in group) / (k - 1))
        for r in group:
            rloo.append(r - (sum(group) - r) / (k - 1))
            grpo.append((r - mean) / (std + 1e-6))
    torch.testing.assert_close(rloo_advantages(returns, k), torch.tensor(rloo, dtype=torch.float64))
    torch.testing.assert_close(grpo_advantages(returns, k), torch.tensor(grpo, dtype=torch.float64))
    # Leave-one-out advantages of a group sum to 0: (k R_i - S) / (k - 1) summed over i.
    torch.testing.assert_close(rloo_advantages(returns, k).reshape(-1, k).sum(-1),
                               torch.zeros(5, dtype=torch.float64))


def test_groups_must_be_whole():
    with pytest.raises(ValueError, match="k >= 2"):
        rloo_advantages(torch.ones(5), k=2)
    with pytest.raises(ValueError, match="k >= 2"):
        grpo_advantages(torch.ones(4), k=1)


def test_whiten_with_and_per_token():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    x = torch.tensor([[1.0, 3.0, 99.0], [5.0, 99.0, 99.0]])
    # Statistics from outside (the global batch): mean 3, std 2.
    assert whiten_with(x, mask, 3.0, 2.0, eps=0.0).tolist() == [[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    assert per_token(torch.tensor([2.0, -1.0]), mask).tolist() == [[2.0, 2.0, 0.0],
                                                                  [-1.0, 0.0, 0.0]]
