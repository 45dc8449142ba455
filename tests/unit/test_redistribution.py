"""Reward redistribution: hand-worked values, plain-loop twins and the sum invariants."""

import pytest
import torch

from red_cli.rlhf.redistribution import (
    abc,
    sparse,
    td,
    td_total,
    uniform,
)
from tests.unit.masks import random_masks

SHAPES = [(8, 1), (8, 5), (8, 12)]
FIRST_TOKEN_CHOICES = ["prompt_baseline", "zero", "absolute"]


def random_inputs(shape, seed):
    g = torch.Generator().manual_seed(seed)
    mask = random_masks(*shape, g)
    scores = torch.randn(shape[0], generator=g, dtype=torch.float64)
    position_scores = torch.randn(shape, generator=g, dtype=torch.float64)
    prompt_scores = torch.randn(shape[0], generator=g, dtype=torch.float64)
    attention = torch.rand(shape, generator=g, dtype=torch.float64)
    attention[1] = 0.0  # row 1 (all real tokens) exercises the zero-attention fallback
    # Garbage on padding must never reach the rewards.
    position_scores = torch.where(mask, position_scores, torch.nan)
    attention = torch.where(mask, attention, 1e6)
    return mask, scores, position_scores, prompt_scores, attention


# ---------------------------------------------------------------- plain-loop twins


def loop_sparse(scores, mask):
    out = []
    for score, ms in zip(scores.tolist(), mask.tolist()):
        real = [t for t, m in enumerate(ms) if m]
        out.append([score if real and t == real[-1] else 0.0 for t in range(len(ms))])
    return torch.tensor(out, dtype=torch.float64)


def loop_uniform(scores, mask):
    out = []
    for score, ms in zip(scores.tolist(), mask.tolist()):
        n = sum(ms)
        out.append([score / n if m else 0.0 for m in ms])
    return torch.tensor(out, dtype=torch.float64)


def loop_td(position_scores, prompt_scores, mask, first_token, beta_c):
    out = []
    for ps, rx, ms in zip(position_scores.tolist(), prompt_scores.tolist(), mask.tolist()):
        real = [t for t, m in enumerate(ms) if m]
        row = [0.0] * len(ms)
        for i, t in enumerate(real):
            if i > 0:
                diff = ps[t] - ps[real[i - 1]]
            elif first_token == "prompt_baseline":
                diff = ps[t] - rx
            elif first_token == "zero":
                diff = 0.0
            else:
                diff = ps[t]
            row[t] = beta_c * diff + (1 - beta_c) * (ps[t] if t == real[-1] else 0.0)
        out.append(row)
    return torch.tensor(out, dtype=torch.float64)


def loop_abc(attention, scores, mask, beta):
    out = []
    for att, score, ms in zip(attention.tolist(), scores.tolist(), mask.tolist()):
        real = [t for t, m in enumerate(ms) if m]
        total = sum(att[t] for t in real)
        row = [0.0] * len(ms)
        for t in real:
            w = att[t] / total if total > 0 else 1 / len(real)
            row[t] = beta * w * score + (1 - beta) * (score if t == real[-1] else 0.0)
        out.append(row)
    return torch.tensor(out, dtype=torch.float64)


# ---------------------------------------------------------------- hand-worked values

MASK = torch.tensor([[True, True, True, False], [False, True, True, False], [False] * 4])


def test_sparse_by_hand():
    # The score sits on the last real token: index 2 in rows 0 and 1; row 2 is empty.
    rewards = sparse(torch.tensor([2.0, -1.0, 5.0]), MASK)
    assert rewards.tolist() == [[0, 0, 2, 0], [0, 0, -1, 0], [0, 0, 0, 0]]


def test_uniform_by_hand():
    # 3 / 3 real tokens = 1 each; 2 / 2 = 1 each (row starting at 1); empty row stays 0.
    rewards = uniform(torch.tensor([3.0, 2.0, 7.0]), MASK)
    assert rewards.tolist() == [[1, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]


P = torch.tensor([[1.0, 3.0, 6.0, 99.0]], dtype=torch.float64)  # 99: padding, ignored
RX = torch.tensor([0.5], dtype=torch.float64)
LEFT = torch.tensor([[True, True, True, False]])


@pytest.mark.parametrize(
    ("first_token", "expected"),
    [
        # differences 3 - 1 = 2 and 6 - 3 = 3; the first token is 1 - R(x) = 0.5 (sum 5.5 =
        # 6 - 0.5), 0 (sum 5 = 6 - 1) or P[first] = 1 (sum 6 = P[last]).
        ("prompt_baseline", [0.5, 2.0, 3.0, 0.0]),
        ("zero", [0.0, 2.0, 3.0, 0.0]),
        ("absolute", [1.0, 2.0, 3.0, 0.0]),
    ],
)
def test_td_by_hand(first_token, expected):
    torch.testing.assert_close(td(P, RX, LEFT, first_token), torch.tensor([expected]).double())


def test_td_mixed_with_sparse_by_hand():
    # beta_c = 0.5: 0.5 * [0.5, 2, 3, 0] + 0.5 * [0, 0, P[last] = 6, 0] = [0.25, 1, 4.5, 0];
    # sum 5.75 = 0.5 * 5.5 + 0.5 * 6.
    torch.testing.assert_close(
        td(P, RX, LEFT, "prompt_baseline", beta_c=0.5),
        torch.tensor([[0.25, 1.0, 4.5, 0.0]]).double(),
    )
    # absolute, beta_c = 0.25: 0.25 * [1, 2, 3, 0] + 0.75 * [0, 0, 6, 0] = [0.25, 0.5, 5.25, 0]
    torch.testing.assert_close(
        td(P, RX, LEFT, "absolute", beta_c=0.25),
        torch.tensor([[0.25, 0.5, 5.25, 0.0]]).double(),
    )


def test_td_row_starting_later_by_hand():
    # Real tokens at 1..3 read 1, 3, 6: the first real token is index 1, differenced
    # against R(x) = 0.5, not against the padding score 99 at index 0.
    scores = torch.tensor([[99.0, 1.0, 3.0, 6.0]], dtype=torch.float64)
    mask = torch.tensor([[False, True, True, True]])
    torch.testing.assert_close(td(scores, RX, mask), torch.tensor([[0.0, 0.5, 2.0, 3.0]]).double())


def test_abc_by_hand():
    # Attention 1, 1, 2 over real tokens (7 on padding ignored) -> w = 0.25, 0.25, 0.5.
    # r = 0.8 * 10 * w = 2, 2, 4, plus 0.2 * 10 = 2 on the last real token -> 2, 2, 6 (sum 10).
    attention = torch.tensor([[1.0, 1.0, 2.0, 7.0]], dtype=torch.float64)
    rewards = abc(attention, torch.tensor([10.0], dtype=torch.float64), LEFT, beta=0.8)
    torch.testing.assert_close(rewards, torch.tensor([[2.0, 2.0, 6.0, 0.0]]).double())


def test_abc_zero_attention_falls_back_to_uniform():
    # No attention mass on real tokens: w = 1/3 each. beta 0.5, score 3:
    # 0.5 * 3 / 3 = 0.5 each, plus 0.5 * 3 = 1.5 on the last -> 0.5, 0.5, 2 (sum 3).
    attention = torch.tensor([[0.0, 0.0, 0.0, 5.0]], dtype=torch.float64)
    rewards = abc(attention, torch.tensor([3.0], dtype=torch.float64), LEFT, beta=0.5)
    torch.testing.assert_close(rewards, torch.tensor([[0.5, 0.5, 2.0, 0.0]]).double())


# ---------------------------------------------------------------- random twins and invariants


@pytest.mark.parametrize("shape", SHAPES)
def test_sparse_and_uniform_match_loop_twins(shape):
    mask, scores, *_ = random_inputs(shape, seed=shape[1])
    torch.testing.assert_close(sparse(scores, mask), loop_sparse(scores, mask))
    torch.testing.assert_close(uniform(scores, mask), loop_uniform(scores, mask))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("first_token", FIRST_TOKEN_CHOICES)
@pytest.mark.parametrize("beta_c", [1.0, 0.5, 0.0])
def test_td_matches_loop_twin(shape, first_token, beta_c):
    mask, _, position_scores, prompt_scores, _ = random_inputs(shape, seed=10 + shape[1])
    torch.testing.assert_close(
        td(position_scores, prompt_scores, mask, first_token, beta_c),
        loop_td(position_scores, prompt_scores, mask, first_token, beta_c),
    )


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("beta", [0.8, 0.0, 1.0])
def test_abc_matches_loop_twin(shape, beta):
    mask, scores, _, _, attention = random_inputs(shape, seed=20 + shape[1])
    torch.testing.assert_close(
        abc(attention, scores, mask, beta), loop_abc(attention, scores, mask, beta)
    )


@pytest.mark.parametrize("shape", SHAPES)
def test_sums_equal_the_score(shape):
    mask, scores, position_scores, prompt_scores, attention = random_inputs(shape, seed=shape[1])
    has_tokens = mask.any(dim=-1)
    # An empty row has nowhere to put a reward: its sum is 0, not the score.
    expected = torch.where(has_tokens, scores, 0.0)
    for rewards in (sparse(scores, mask), uniform(scores, mask), abc(attention, scores, mask)):
        torch.testing.assert_close(rewards.sum(-1), expected)

    # td: the sequence score is the reward head at the last real token.
    last = torch.stack(
        [p[m][-1] if m.any() else p.new_zeros(()) for p, m in zip(position_scores, mask)]
    )
    first = torch.stack(
        [p[m][0] if m.any() else p.new_zeros(()) for p, m in zip(position_scores, mask)]
    )
    for beta_c in (1.0, 0.3):
        torch.testing.assert_close(
            td(position_scores, prompt_scores, mask, "absolute", beta_c).sum(-1), last
        )
    torch.testing.assert_close(
        td(position_scores, prompt_scores, mask, "prompt_baseline").sum(-1),
        torch.where(has_tokens, last - prompt_scores, 0.0),
    )
    torch.testing.assert_close(
        td(position_scores, prompt_scores, mask, "zero").sum(-1), last - first
    )


@pytest.mark.parametrize("shape", SHAPES)
def test_zero_outside_mask_and_finite(shape):
    mask, scores, position_scores, prompt_scores, attention = random_inputs(shape, seed=shape[1])
    outputs = [
        sparse(scores, mask),
        uniform(scores, mask),
        abc(attention, scores, mask),
        *(td(position_scores, prompt_scores, mask, f, 0.5) for f in FIRST_TOKEN_CHOICES),
    ]
    for rewards in outputs:
        assert rewards.shape == shape
        assert torch.isfinite(rewards).all()
        assert (rewards[~mask] == 0).all()
        assert (rewards[0] == 0).all()  # the all-False row


def test_half_precision_scores_give_float32_rewards():
    scores = torch.tensor([1.0, 2.0], dtype=torch.bfloat16)
    mask = torch.ones(2, 3, dtype=torch.bool)
    assert sparse(scores, mask).dtype == torch.float32
    assert td(torch.ones(2, 3, dtype=torch.bfloat16), scores, mask).dtype == torch.float32


# ---------------------------------------------------------------- lookup and errors


def test_td_total_is_what_td_sums_to():
    """td_total telescopes; td sums its differences: the two must agree for every reading of
    the first token, any beta_c, and rows whose response starts after index 0."""
    torch.manual_seed(0)
    mask = torch.zeros(6, 9, dtype=torch.bool)
    for i, (a, b) in enumerate([(0, 9), (2, 5), (4, 5), (0, 1), (3, 9), (1, 8)]):
        mask[i, a:b] = True
    prefix = torch.randn(6, 9, dtype=torch.float64)
    prompt = torch.randn(6, dtype=torch.float64)
    for first_token in ("prompt_baseline", "zero", "absolute"):
        for beta_c in (0.0, 0.5, 1.0):
            rewards = td(prefix, prompt, mask, first_token=first_token, beta_c=beta_c)
            total = td_total(prefix, prompt, mask, first_token=first_token, beta_c=beta_c)
            torch.testing.assert_close(rewards.sum(-1), total)


def test_td_rejects_unknown_first_token():
    with pytest.raises(ValueError, match="first_token='prompt'.*absolute.*prompt_baseline.*zero"):
        td(P, RX, LEFT, first_token="prompt")


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="scores must be"):
        sparse(torch.ones(3), LEFT)
    with pytest.raises(ValueError, match="attention must be"):
        abc(torch.ones(1, 5), torch.ones(1), LEFT)
    with pytest.raises(ValueError, match="bool"):
        uniform(torch.ones(1), LEFT.float())
