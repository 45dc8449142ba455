"""RewardPipeline's shaping path: one map for score, prefix scores and R(x); the missing-EOS
penalty on the score and the last prefix score only. A tiny random GPT-2 reward model reads a
hand-built rollout through the identity path (same tokenizer object, plain template)."""

import pytest
import torch
from omegaconf import OmegaConf
from transformers import GPT2Config, GPT2ForSequenceClassification

from red_cli.config.schema import RewardModelConfig
from red_cli.generation.rollout import Rollout
from red_cli.modes import get_mode
from red_cli.modes.td import TDConfig
from red_cli.reward.pipeline import RewardPipeline
from red_cli.reward.shaping import ScoreShaper
from red_cli.reward.stack import RewardStack

VOCAB, PAD, EOS = 32, 0, 2
PREFIX = {"prefix_scores"}


class Tok:
    """What the identity path reads of a tokenizer (policy and RM are this same object)."""

    eos_token_id, pad_token_id = EOS, PAD

    def get_vocab(self):
        return {f"t{i}": i for i in range(VOCAB)}


@pytest.fixture(scope="module")
def stack():
    torch.manual_seed(0)
    model = GPT2ForSequenceClassification(GPT2Config(
        vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2, n_positions=32, num_labels=1,
        pad_token_id=PAD, eos_token_id=EOS, bos_token_id=1)).eval()
    with torch.no_grad():
        model.score.weight.mul_(20.0)  # spread the readings so clipping has work to do
    cfg = OmegaConf.structured(RewardModelConfig(path="unused", max_length=64))
    return RewardStack(cfg, model, Tok())


def rollout():
    f, T_ = False, True
    # Row 0: ends with EOS.  Row 1: truncated at T=5, no EOS.  Row 2: EOS after one token.
    # Row 3: no EOS, shorter than T, and padded with the EOS id: padding must not count.
    query_ids = torch.tensor([[PAD, PAD, 5, 6], [9, 10, 11, 12], [PAD, 20, 21, 22],
                              [PAD, PAD, PAD, 25]])
    query_mask = torch.tensor([[f, f, T_, T_], [T_, T_, T_, T_], [f, T_, T_, T_],
                               [f, f, f, T_]])
    response_ids = torch.tensor([[7, 8, EOS, PAD, PAD], [13, 14, 15, 16, 17],
                                 [23, EOS, PAD, PAD, PAD], [26, 27, 28, EOS, EOS]])
    response_mask = torch.tensor([[T_, T_, T_, f, f], [T_] * 5, [T_, T_, f, f, f],
                                  [T_, T_, T_, f, f]])
    return Rollout(["p"] * 4, ["r"] * 4, query_ids, query_mask, response_ids, response_mask)


NO_EOS = torch.tensor([False, True, False, True])
LAST = torch.tensor([2, 4, 1, 2])  # last real response token of each row


def run(stack, shaper, needs=()):
    return RewardPipeline(stack, stack.tokenizer, needs=needs)(rollout(), shaper, 1)


def close(a, b):
    return torch.allclose(a, b, atol=1e-5, rtol=0)


def test_identity_path_is_taken(stack):
    assert RewardPipeline(stack, stack.tokenizer, needs=PREFIX).identity


def test_missing_eos_penalty_lowers_only_rows_without_eos(stack):
    plain = run(stack, ScoreShaper("none", None, None))
    pen = run(stack, ScoreShaper("none", None, 0.75))
    assert pen.has_eos.tolist() == [True, False, True, False]
    assert torch.equal(pen.raw_scores, plain.raw_scores)  # raw is as read, unpenalised
    assert close(pen.signals.scores, plain.raw_scores - 0.75 * NO_EOS.float())


def test_missing_eos_penalty_lands_on_the_last_prefix_score_and_td_telescopes(stack):
    plain = run(stack, ScoreShaper("none", None, None), PREFIX)
    pen = run(stack, ScoreShaper("none", None, 0.75), PREFIX)
    p, q = pen.signals, plain.signals
    # The prefix path ends at the sequence score, with or without the penalty.
    rows = torch.arange(4)
    assert close(q.prefix_scores[rows, LAST], q.scores)
    assert close(p.prefix_scores[rows, LAST], p.scores)
    # Exactly one prefix score moves per row without EOS: its last real one (row 3: index 2,
    # not T - 1), by the penalty; everything else, R(x) included, stays.
    want = torch.zeros(4, 5)
    want[1, 4] = want[3, 2] = 0.75
    assert close(q.prefix_scores - p.prefix_scores, want)
    assert torch.equal(p.prefix_scores[~p.response_mask], torch.zeros(int((~p.response_mask).sum())))
    assert close(p.prompt_scores, q.prompt_scores)

    credit = get_mode("td").apply(p, TDConfig())
    assert close(credit.rewards.sum(-1), credit.target)
    # prompt_baseline: each row sums to (penalised score - R(x)); the penalised rows sum to
    # 0.75 less than without the penalty.
    assert close(credit.rewards.sum(-1), p.scores - p.prompt_scores)
    plain_sum = get_mode("td").apply(q, TDConfig()).rewards.sum(-1)
    assert close(plain_sum - credit.rewards.sum(-1), 0.75 * NO_EOS.float())


def test_score_clip_uses_one_map_for_score_prefix_scores_and_prompt_scores(stack):
    plain = run(stack, ScoreShaper("none", None, None), PREFIX).signals
    clip = 1.0
    # Preconditions: the clip bites on some readings of each kind and spares others.
    for x in (plain.scores, plain.prefix_scores[plain.response_mask], plain.prompt_scores):
        assert (x.abs() > clip).any() and (x.abs() < clip).any(), x
    got = run(stack, ScoreShaper("none", clip, None), PREFIX).signals
    assert close(got.scores, plain.scores.clamp(-clip, clip))
    assert close(got.prompt_scores, plain.prompt_scores.clamp(-clip, clip))
    m = plain.response_mask
    assert close(got.prefix_scores[m], plain.prefix_scores[m].clamp(-clip, clip))
    # By hand: a reading below -1 becomes exactly -1, one inside [-1, 1] stays as read.
    below = plain.prompt_scores.argmin()
    inside = (plain.prefix_scores.abs() < clip) & m
    assert plain.prompt_scores[below] < -clip and got.prompt_scores[below].item() == -clip
    assert torch.equal(got.prefix_scores[inside], plain.prefix_scores[inside])


def test_batch_norm_standardises_scores_and_maps_prefix_and_prompt_alike(stack):
    plain = run(stack, ScoreShaper("none", None, None), PREFIX).signals
    got = run(stack, ScoreShaper("batch", None, None), PREFIX).signals
    assert abs(got.scores.mean().item()) < 1e-5
    assert got.scores.std(unbiased=True).item() == pytest.approx(1.0, abs=1e-5)
    # The shift and scale come from the scores and are applied to R(x) and the prefix scores
    # as they are (not from their own statistics).
    mean, std = plain.scores.double().mean(), plain.scores.double().std()
    assert close(got.prompt_scores, ((plain.prompt_scores - mean) / std).float())
    m = plain.response_mask
    assert close(got.prefix_scores[m], ((plain.prefix_scores[m] - mean) / std).float())
    rows = torch.arange(4)
    assert close(got.prefix_scores[rows, LAST], got.scores)


def test_penalty_comes_after_normalisation_and_stays_out_of_the_statistics(stack):
    plain = run(stack, ScoreShaper("none", None, None)).raw_scores.double()
    shaper = ScoreShaper("running", None, 0.75)
    got = run(stack, shaper)
    # The statistics saw the raw scores, not the penalised ones.
    assert shaper.count == 4
    assert shaper.mean == pytest.approx(plain.mean().item(), abs=1e-6)
    want = (plain - plain.mean()) / plain.std() - 0.75 * NO_EOS.double()
    assert close(got.signals.scores, want.float())
