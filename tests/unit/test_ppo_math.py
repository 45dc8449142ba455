"""PPO math: log-probs and entropy from logits, clipped policy and value losses."""

import math

import pytest
import torch

from red_cli.rlhf.ppo import entropy_from_logits, gather_logprobs, policy_loss, value_loss
from tests.unit.masks import random_masks

SHAPES = [(8, 1), (8, 5), (8, 12)]


# ---------------------------------------------------------------- plain-loop twins


def loop_logprobs_and_entropy(logits, labels):
    logprobs, entropies = [], []
    for row_logits, row_labels in zip(logits.tolist(), labels.tolist()):
        lp_row, h_row = [], []
        for z, y in zip(row_logits, row_labels):
            m = max(z)
            log_norm = m + math.log(sum(math.exp(v - m) for v in z))
            lp_row.append(z[y] - log_norm)
            h_row.append(-sum(math.exp(v - log_norm) * (v - log_norm) for v in z))
        logprobs.append(lp_row)
        entropies.append(h_row)
    return torch.tensor(logprobs, dtype=torch.float64), torch.tensor(entropies, dtype=torch.float64)


def loop_policy_loss(logp, old, adv, mask, eps):
    terms, clipped, sq, ratios = [], [], [], []
    for lps, ols, advs, ms in zip(logp.tolist(), old.tolist(), adv.tolist(), mask.tolist()):
        for lp, ol, a, m in zip(lps, ols, advs, ms):
            if not m:
                continue
            ratio = math.exp(lp - ol)
            unclipped_term = -a * ratio
            clipped_term = -a * min(max(ratio, 1 - eps), 1 + eps)
            terms.append(max(unclipped_term, clipped_term))
            clipped.append(1.0 if clipped_term > unclipped_term else 0.0)
            sq.append((lp - ol) ** 2)
            ratios.append(ratio)
    n = max(len(terms), 1)
    return sum(terms) / n, sum(clipped) / n, 0.5 * sum(sq) / n, sum(ratios) / n


def loop_value_loss(values, old, returns, mask, eps):
    terms, clipped = [], []
    for vs, ols, rs, ms in zip(values.tolist(), old.tolist(), returns.tolist(), mask.tolist()):
        for v, o, r, m in zip(vs, ols, rs, ms):
            if not m:
                continue
            v_clip = o + min(max(v - o, -eps), eps)
            unclipped_error, clipped_error = (v - r) ** 2, (v_clip - r) ** 2
            terms.append(max(unclipped_error, clipped_error))
            clipped.append(1.0 if clipped_error > unclipped_error else 0.0)
    n = max(len(terms), 1)
    return 0.5 * sum(terms) / n, sum(clipped) / n


# ---------------------------------------------------------------- log-probs and entropy


def test_logprobs_and_entropy_by_hand():
    # logits [0, 0, ln 2]: probabilities 1/4, 1/4, 1/2.
    logits = torch.tensor([[[0.0, 0.0, math.log(2.0)]]], dtype=torch.float64)
    logp = gather_logprobs(logits, torch.tensor([[2]]))
    assert logp.item() == pytest.approx(math.log(0.5))
    # H = 2 * (1/4) ln 4 + (1/2) ln 2 = 1.5 ln 2 = 1.039721
    assert entropy_from_logits(logits).item() == pytest.approx(1.5 * math.log(2.0))
    # Uniform over V = 7: H = ln 7; a near one-hot: H ~ 0.
    assert entropy_from_logits(torch.zeros(1, 1, 7)).item() == pytest.approx(math.log(7))
    assert entropy_from_logits(torch.tensor([[[0.0, 80.0, 0.0]]])).item() == pytest.approx(
        0, abs=1e-6
    )


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("chunk_rows", [1, 3, 1024])
def test_logprobs_and_entropy_match_loop_twin(shape, chunk_rows):
    g = torch.Generator().manual_seed(shape[1])
    logits = torch.randn(*shape, 11, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(0, 11, shape, generator=g)
    expected_logp, expected_entropy = loop_logprobs_and_entropy(logits, labels)
    torch.testing.assert_close(gather_logprobs(logits, labels, chunk_rows), expected_logp)
    torch.testing.assert_close(entropy_from_logits(logits, chunk_rows), expected_entropy)


def test_gather_logprobs_gradient_matches_log_softmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 5, (2, 3), generator=g)
    weights = torch.randn(2, 3, generator=g, dtype=torch.float64)
    (gather_logprobs(logits, labels, chunk_rows=2) * weights).sum().backward()
    ours = logits.grad.clone()
    logits.grad = None
    reference = torch.log_softmax(logits, -1).gather(-1, labels[..., None]).squeeze(-1)
    (reference * weights).sum().backward()
    torch.testing.assert_close(ours, logits.grad)


def test_half_precision_logits_are_upcast():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 50, generator=g) * 5
    labels = torch.randint(0, 50, (2, 3), generator=g)
    logp = gather_logprobs(logits.bfloat16(), labels)
    assert logp.dtype == torch.float32
    # Only the bf16 rounding of the inputs remains (~0.4% of |logit| <= ~20).
    expected = gather_logprobs(logits.bfloat16().float(), labels)
    torch.testing.assert_close(logp, expected)
    assert entropy_from_logits(logits.bfloat16()).dtype == torch.float32


# ---------------------------------------------------------------- policy loss


def _policy_case():
    # Four real tokens (ratio, advantage) and one padding token with a huge log-ratio.
    ratios = [1.5, 0.5, 1.5, 0.5, 1.0]
    old = torch.tensor([[-1.0, -2.0, -1.0, -2.0, -3.0]], dtype=torch.float64)
    logp = (old + torch.tensor([ratios]).double().log()).clone()
    logp[0, 4] = 1000.0  # exp(1003) overflows: must stay out of the loss and the gradient
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0, 5.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, True, True, False]])
    return logp.requires_grad_(), old, adv, mask


def test_policy_loss_by_hand():
    logp, old, adv, mask = _policy_case()
    out = policy_loss(logp, old, adv, mask, cliprange=0.2)
    # per token max(-A rho, -A clip(rho, 0.8, 1.2)):
    #   rho 1.5, A +1: max(-1.5, -1.2) = -1.2  (clipped)
    #   rho 0.5, A +1: max(-0.5, -0.8) = -0.5
    #   rho 1.5, A -1: max( 1.5,  1.2) =  1.5
    #   rho 0.5, A -1: max( 0.5,  0.8) =  0.8  (clipped)
    # mean (-1.2 - 0.5 + 1.5 + 0.8) / 4 = 0.15; clipfrac 2 / 4
    assert out.loss.item() == pytest.approx(0.15)
    assert out.clipfrac.item() == pytest.approx(0.5)
    # 0.5 * mean(ln1.5^2, ln0.5^2, ln1.5^2, ln0.5^2) = 0.5 * (0.164402 + 0.480453) / 2
    assert out.approx_kl.item() == pytest.approx(0.161214, abs=1e-6)
    assert not out.clipfrac.requires_grad and not out.approx_kl.requires_grad

    out.loss.backward()
    # d/dlogp of -A rho / 4 = -A rho / 4 where unclipped; 0 where the clip is active
    # and on padding: 0, -0.5 / 4, 1.5 / 4, 0, 0.
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, -0.125, 0.375, 0.0, 0.0]]).double())


@pytest.mark.parametrize("shape", SHAPES)
def test_policy_loss_matches_loop_twin(shape):
    g = torch.Generator().manual_seed(shape[1])
    mask = random_masks(*shape, g)
    old = -torch.rand(shape, generator=g, dtype=torch.float64) * 3
    logp = old + torch.randn(shape, generator=g, dtype=torch.float64) * 0.3
    adv = torch.randn(shape, generator=g, dtype=torch.float64)
    out = policy_loss(logp, old, adv, mask, cliprange=0.2)
    expected = loop_policy_loss(logp, old, adv, mask, 0.2)
    for got, want in zip(out, expected):
        assert got.item() == pytest.approx(want)


def test_losses_on_an_empty_batch_are_zero():
    none = torch.zeros(2, 3, dtype=torch.bool)
    x = torch.randn(2, 3)
    assert all(v.item() == 0 for v in policy_loss(x, x, x, none, 0.2))
    assert all(v.item() == 0 for v in value_loss(x, x, x, none, 0.2))


# ---------------------------------------------------------------- value loss


def test_value_loss_by_hand():
    values = torch.tensor([[1.0, 0.0, 0.6, 9.0]], dtype=torch.float64, requires_grad=True)
    old = torch.tensor([[0.5, 0.5, 0.5, 0.0]], dtype=torch.float64)
    returns = torch.tensor([[2.0, 0.0, 1.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, True, False]])
    out = value_loss(values, old, returns, mask, cliprange_value=0.2)
    # token 0: clipped V 0.7; errors (1 - 2)^2 = 1, (0.7 - 2)^2 = 1.69 -> 1.69 (clipped)
    # token 1: clipped V 0.3; errors 0, 0.09 -> 0.09 (clipped)
    # token 2: inside the clip; both errors (0.6 - 1)^2 = 0.16 -> 0.16 (not clipped)
    # loss 0.5 * (1.69 + 0.09 + 0.16) / 3 = 0.323333; clipfrac 2 / 3
    assert out.loss.item() == pytest.approx(0.5 * 1.94 / 3)
    assert out.clipfrac.item() == pytest.approx(2 / 3)
    out.loss.backward()
    # Clipped tokens get no gradient; token 2: 0.5 * 2 * (0.6 - 1) / 3 = -0.133333.
    torch.testing.assert_close(values.grad, torch.tensor([[0.0, 0.0, -0.4 / 3, 0.0]]).double())


@pytest.mark.parametrize("shape", SHAPES)
def test_value_loss_matches_loop_twin(shape):
    g = torch.Generator().manual_seed(100 + shape[1])
    mask = random_masks(*shape, g)
    old = torch.randn(shape, generator=g, dtype=torch.float64)
    values = old + torch.randn(shape, generator=g, dtype=torch.float64) * 0.3
    returns = torch.randn(shape, generator=g, dtype=torch.float64)
    out = value_loss(values, old, returns, mask, cliprange_value=0.2)
    expected = loop_value_loss(values, old, returns, mask, 0.2)
    for got, want in zip(out, expected):
        assert got.item() == pytest.approx(want)
