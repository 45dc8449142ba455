"""The last_k mode: hand-worked values, its plain-loop twin, the sum invariant, its knob check,
and that sparse and uniform are its two ends."""

from __future__ import annotations

import pytest
import torch

from red_cli.modes import get_mode
from red_cli.modes.last_k import LastKConfig, last_k
from red_cli.modes.spec import Signals
from red_cli.rlhf.redistribution import sparse, uniform
from tests.unit.masks import random_masks


def loop_last_k(scores, mask, k):
    out = torch.zeros(mask.shape, dtype=torch.float64)
    for i in range(mask.shape[0]):
        real = [t for t in range(mask.shape[1]) if mask[i, t]]
        chosen = real[-k:]
        for t in chosen:
            out[i, t] = float(scores[i]) / len(chosen)
    return out


def test_hand_worked():
    # Row 0: real tokens 0..4, k = 2 -> the last two get 6 / 2 = 3 each.
    # Row 1: a response at 2..3, exactly k = 2 tokens -> 3 / 2 = 1.5 each.
    # Row 2: one real token at 0 -> all of -4 there.
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    rewards = last_k(torch.tensor([6.0, 3.0, -4.0]), mask, k=2)
    assert rewards.tolist() == [[0, 0, 0, 3, 3], [0, 0, 1.5, 1.5, 0], [-4, 0, 0, 0, 0]]


@pytest.mark.parametrize("k", [1, 2, 3, 7, 100])
def test_matches_plain_loop_and_sums_to_the_score(k):
    gen = torch.Generator().manual_seed(k)
    mask = random_masks(16, 9, gen)
    scores = torch.randn(16, dtype=torch.float64)
    rewards = last_k(scores, mask, k)
    torch.testing.assert_close(rewards, loop_last_k(scores, mask, k))
    nonempty = mask.any(-1)
    torch.testing.assert_close(rewards.sum(-1)[nonempty], scores[nonempty])
    assert (rewards[~mask] == 0).all()


def test_its_ends_are_sparse_and_uniform():
    mask = random_masks(8, 6, torch.Generator().manual_seed(0))
    scores = torch.randn(8)
    torch.testing.assert_close(last_k(scores, mask, 1), sparse(scores, mask))
    torch.testing.assert_close(last_k(scores, mask, 6), uniform(scores, mask))


def test_the_spec():
    mode = get_mode("last_k")
    assert mode.dense and mode.needs == frozenset()
    assert mode.check(LastKConfig(k=0)) == [("k", 0, "must be >= 1")]
    assert mode.check(LastKConfig(k=3)) == []
    mask = torch.ones(2, 4, dtype=torch.bool)
    credit = mode.apply(Signals(torch.tensor([4.0, -2.0]), mask), LastKConfig(k=2))
    torch.testing.assert_close(credit.rewards.sum(-1), credit.target)
