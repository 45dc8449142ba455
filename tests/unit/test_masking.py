"""Masked reductions and response-mask helpers: hand-worked values and plain-loop twins."""

import math

import pytest
import torch

from red_cli.rlhf.masking import (
    first_true_index,
    last_true_index,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
    truncate_after_eos,
)
from tests.unit.masks import random_masks

SHAPES = [(8, 1), (8, 5), (8, 12)]


# ---------------------------------------------------------------- plain-loop twins


def loop_masked_mean_rows(x, mask):
    out = []
    for xs, ms in zip(x.tolist(), mask.tolist()):
        picked = [v for v, m in zip(xs, ms) if m]
        out.append(sum(picked) / len(picked) if picked else 0.0)
    return torch.tensor(out, dtype=torch.float64)


def loop_masked_var(x, mask, unbiased):
    picked = [v for xs, ms in zip(x.tolist(), mask.tolist()) for v, m in zip(xs, ms) if m]
    n = len(picked)
    if n <= 1:
        return 0.0
    mean = sum(picked) / n
    return sum((v - mean) ** 2 for v in picked) / (n - 1 if unbiased else n)


def loop_masked_whiten(x, mask, shift_mean):
    picked = [v for xs, ms in zip(x.tolist(), mask.tolist()) for v, m in zip(xs, ms) if m]
    mean = sum(picked) / len(picked) if picked else 0.0
    std = math.sqrt(loop_masked_var(x, mask, unbiased=True) + 1e-8)
    out = []
    for xs, ms in zip(x.tolist(), mask.tolist()):
        row = []
        for v, m in zip(xs, ms):
            w = (v - mean) / std + (0.0 if shift_mean else mean)
            row.append(w if m else 0.0)
        out.append(row)
    return torch.tensor(out, dtype=torch.float64)


def loop_last_first(mask):
    last, first = [], []
    for ms in mask.tolist():
        idx = [t for t, m in enumerate(ms) if m]
        last.append(idx[-1] if idx else -1)
        first.append(idx[0] if idx else -1)
    return torch.tensor(last), torch.tensor(first)


def loop_truncate(ids, eos, pad, keep_sampled_pad=False):
    eos = {eos} if isinstance(eos, int) else set(eos)
    out_ids, out_mask = [], []
    for row in ids.tolist():
        new_row, new_mask, ended = [], [], False
        for tok in row:
            if not ended and (tok in eos or (keep_sampled_pad and tok == pad)):
                new_row.append(tok)
                new_mask.append(True)
                ended = True
            elif not ended and tok != pad:
                new_row.append(tok)
                new_mask.append(True)
            else:
                ended = True
                new_row.append(pad)
                new_mask.append(False)
        out_ids.append(new_row)
        out_mask.append(new_mask)
    return torch.tensor(out_ids), torch.tensor(out_mask)


# ---------------------------------------------------------------- hand-worked values

X = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=torch.float64)
M = torch.tensor([[True, True, False], [False, False, False]])


def test_masked_sum_and_mean_by_hand():
    # selected: 1 + 2 = 3 over 2 elements -> mean 1.5; the all-False row has mean 0.
    assert masked_sum(X, M).item() == 3.0
    assert masked_mean(X, M).item() == 1.5
    torch.testing.assert_close(masked_sum(X, M, dim=-1), torch.tensor([3.0, 0.0]).double())
    torch.testing.assert_close(masked_mean(X, M, dim=-1), torch.tensor([1.5, 0.0]).double())
    # dim=0: column 0 picks only 1, column 1 only 2, column 2 nothing -> 0.
    torch.testing.assert_close(masked_mean(X, M, dim=0), torch.tensor([1.0, 2.0, 0.0]).double())


def test_reductions_ignore_inf_and_nan_in_padding():
    x = torch.tensor([[1.0, float("inf"), float("nan")]])
    mask = torch.tensor([[True, False, False]])
    assert masked_sum(x, mask).item() == 1.0
    assert masked_mean(x, mask).item() == 1.0
    assert masked_var(x, mask).item() == 0.0
    assert torch.isfinite(masked_whiten(x, mask)).all()


def test_all_false_mask_gives_zero_not_nan():
    none = torch.zeros_like(M)
    assert masked_mean(X, none).item() == 0.0
    assert masked_var(X, none).item() == 0.0
    assert masked_var(X, none, unbiased=False).item() == 0.0
    assert torch.equal(masked_whiten(X, none), torch.zeros_like(X))


def test_masked_var_by_hand():
    # 1, 2, 3, 4: mean 2.5, squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5,
    # unbiased 5 / 3, biased 5 / 4. The masked-out 100 must not count.
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, 100.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, False], [True, True, False]])
    assert masked_var(x, mask).item() == pytest.approx(5 / 3)
    assert masked_var(x, mask, unbiased=False).item() == pytest.approx(5 / 4)
    # A single element has no spread: 0, where TRL divides by zero.
    assert masked_var(x, torch.tensor([[True, False, False], [False] * 3])).item() == 0.0


def test_masked_whiten_by_hand():
    # 1 and 3: mean 2, unbiased var (1 + 1) / 1 = 2 -> (-1, +1) / sqrt(2).
    x = torch.tensor([[1.0, 3.0, 50.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, False]])
    s = 1 / math.sqrt(2 + 1e-8)
    torch.testing.assert_close(masked_whiten(x, mask), torch.tensor([[-s, s, 0.0]]).double())
    # TRL: shift_mean=False adds the mean back -> 2 -+ 1/sqrt(2); padding still 0.
    torch.testing.assert_close(
        masked_whiten(x, mask, shift_mean=False), torch.tensor([[2 - s, 2 + s, 0.0]]).double()
    )


def test_index_helpers_by_hand():
    mask = torch.tensor(
        [
            [True, True, False, False],
            [False, True, True, True],
            [False] * 4,
            [False, False, True, False],
        ]
    )
    assert last_true_index(mask).tolist() == [1, 3, -1, 2]
    assert first_true_index(mask).tolist() == [0, 1, -1, 2]
    assert last_true_index(mask).dtype == torch.long


def test_truncate_after_eos_by_hand():
    eos, pad = 2, 0
    ids = torch.tensor(
        [
            [5, 2, 7, 8],  # EOS kept, the tokens after it become pad
            [5, 6, 7, 8],  # no EOS: truncated by length, all kept
            [2, 2, 3, 3],  # EOS first: only it stays; the second EOS is after the first
            [5, 2, 0, 0],  # already padded after EOS
            [5, 6, 0, 0],  # padded without EOS (dataset right-padding)
        ]
    )
    out, mask = truncate_after_eos(ids, eos, pad)
    assert out.tolist() == [[5, 2, 0, 0], [5, 6, 7, 8], [2, 0, 0, 0], [5, 2, 0, 0], [5, 6, 0, 0]]
    assert mask.int().tolist() == [
        [1, 1, 0, 0],
        [1, 1, 1, 1],
        [1, 0, 0, 0],
        [1, 1, 0, 0],
        [1, 1, 0, 0],
    ]
    assert mask.dtype == torch.bool


def test_truncate_after_eos_keeps_a_sampled_pad_and_honours_every_eos_id():
    # EOS ids 2 and 3 (e.g. end-of-turn and end-of-text), pad 0 sampled by the policy.
    ids = torch.tensor(
        [
            [0, 5, 6, 7],  # pad first: it is the whole response (never empty)
            [5, 0, 6, 2],  # pad ends the response before the EOS
            [5, 3, 6, 7],  # the second EOS id ends it too
            [5, 6, 2, 3],  # the first of the EOS ids wins
        ]
    )
    out, mask = truncate_after_eos(ids, [2, 3], 0, keep_sampled_pad=True)
    assert mask.int().tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0]]
    assert out.tolist() == [[0, 0, 0, 0], [5, 0, 0, 0], [5, 3, 0, 0], [5, 6, 2, 0]]
    assert mask.any(-1).all()
    # As data (right-padded): the pad is padding and the first row is empty.
    _, mask = truncate_after_eos(ids, [2, 3], 0)
    assert mask.int().tolist()[0] == [0, 0, 0, 0]


def test_truncate_after_eos_when_pad_is_eos():
    # GPT-2 style: pad == eos. The first one is the EOS (in), the rest padding (out).
    ids = torch.tensor([[5, 9, 9, 9], [9, 9, 9, 9], [5, 6, 7, 8]])
    out, mask = truncate_after_eos(ids, eos_token_id=9, pad_token_id=9)
    assert mask.int().tolist() == [[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]]
    assert out.tolist() == ids.tolist()


# ---------------------------------------------------------------- random twins


@pytest.mark.parametrize("shape", SHAPES)
def test_reductions_match_loop_twin(shape):
    g = torch.Generator().manual_seed(shape[1])
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    mask = random_masks(*shape, g)
    torch.testing.assert_close(masked_mean(x, mask, dim=-1), loop_masked_mean_rows(x, mask))
    for unbiased in (True, False):
        assert masked_var(x, mask, unbiased).item() == pytest.approx(
            loop_masked_var(x, mask, unbiased)
        )
    for shift_mean in (True, False):
        torch.testing.assert_close(
            masked_whiten(x, mask, shift_mean), loop_masked_whiten(x, mask, shift_mean)
        )


@pytest.mark.parametrize("shape", SHAPES)
def test_index_helpers_match_loop_twin(shape):
    g = torch.Generator().manual_seed(100 + shape[1])
    mask = random_masks(*shape, g)
    last, first = loop_last_first(mask)
    assert torch.equal(last_true_index(mask), last)
    assert torch.equal(first_true_index(mask), first)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("pad", [0, 2])  # 2 == eos: the GPT-2 case
def test_truncate_after_eos_matches_loop_twin(shape, pad):
    g = torch.Generator().manual_seed(200 + shape[1])
    # A vocabulary of 5 makes EOS (2) and pad (0) frequent, several per row.
    ids = torch.randint(0, 5, shape, generator=g)
    for eos in (2, [2, 4]):
        for keep in (False, True):
            out, mask = truncate_after_eos(ids, eos_token_id=eos, pad_token_id=pad,
                                           keep_sampled_pad=keep)
            expected_ids, expected_mask = loop_truncate(ids, eos=eos, pad=pad,
                                                        keep_sampled_pad=keep)
            assert torch.equal(out, expected_ids)
            assert torch.equal(mask, expected_mask)
