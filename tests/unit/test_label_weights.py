"""A k-label classifier as a scalar reward model: reward_model.label_weights folded into the head.

Tiny random-init models built from config (no hub). The IMDb case is ABC's reward,
logit[positive] - logit[negative] of a DistilBERT sentiment classifier.
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import (
    DistilBertConfig,
    DistilBertForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from red_cli.errors import ConfigError
from red_cli.models import fold_label_weights, load_reward_model
from red_cli.models.anatomy import is_causal_rm
from red_cli.reward.scoring import score_batch

VOCAB, PAD, CLS, SEP = 64, 0, 3, 4


def _distilbert(num_labels=2):
    return DistilBertForSequenceClassification(DistilBertConfig(
        vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64,
        num_labels=num_labels, pad_token_id=PAD)).eval()


def _gpt2(num_labels=3):
    return GPT2ForSequenceClassification(GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, num_labels=num_labels,
        pad_token_id=PAD)).eval()


def _roberta(num_labels=2):
    return RobertaForSequenceClassification(RobertaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=80, num_labels=num_labels,
        pad_token_id=1)).eval()


def _batch(bert: bool):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, VOCAB, (4, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # right padding: one shorter row
    ids[1, 6:] = PAD
    if bert:
        ids[:, 0] = CLS
    return ids, mask


@pytest.mark.parametrize("build,weights", [(_distilbert, [-1.0, 1.0]), (_gpt2, [0.5, -2.0, 1.0]),
                                           (_roberta, [-1.0, 1.0])])
def test_folded_head_equals_the_weighted_logits(build, weights):
    torch.manual_seed(0)
    original = build()
    folded = fold_label_weights(copy.deepcopy(original), weights)
    ids, mask = _batch(bert=build is not _gpt2)
    with torch.no_grad():
        logits = original(input_ids=ids, attention_mask=mask).logits
        one = folded(input_ids=ids, attention_mask=mask).logits
    assert one.shape == (4, 1) and folded.config.num_labels == 1
    torch.testing.assert_close(one[:, 0], logits @ torch.tensor(weights), atol=1e-5, rtol=1e-5)
    if weights == [-1.0, 1.0]:
        torch.testing.assert_close(one[:, 0], logits[:, 1] - logits[:, 0], atol=1e-5, rtol=1e-5)


def test_sentiment_rm_scores_and_attention_row_after_folding():
    """The abc path reads the folded score and DistilBERT's CLS attention row (its attention
    modules have no layer index)."""
    torch.manual_seed(0)
    model = fold_label_weights(_distilbert(), [-1.0, 1.0])
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    assert not is_causal_rm(model)
    ids, mask = _batch(bert=True)
    out = score_batch(model, ids, mask, positions=False, attention=True)
    for i in range(ids.shape[0]):
        n = int(mask[i].sum())
        with torch.no_grad():
            alone = eager(input_ids=ids[i, :n][None], output_attentions=True)
        assert out.scores[i].item() == pytest.approx(alone.logits[0, 0].item(), abs=1e-5)
        torch.testing.assert_close(out.attention_row[i, :n], alone.attentions[-1][0].mean(0)[0],
                                   atol=1e-5, rtol=0)
    assert (out.attention_row[mask == 0] == 0).all()


def test_wrong_number_of_weights_names_the_key():
    with pytest.raises(ConfigError, match=r"reward_model\.label_weights=\[1\.0\]: .* has 2 labels"):
        fold_label_weights(_distilbert(), [1.0])


def test_loader_folds_or_refuses_a_multi_label_classifier(tmp_path):
    _distilbert().save_pretrained(tmp_path / "rm")
    with pytest.raises(ConfigError, match="num_labels=1.*label_weights"):
        load_reward_model(str(tmp_path / "rm"))
    model = load_reward_model(str(tmp_path / "rm"), label_weights=[-1.0, 1.0])
    assert model.config.num_labels == 1 and not any(p.requires_grad for p in model.parameters())


def test_abc_refuses_at_start_up_a_reward_model_whose_attention_it_cannot_read():
    """DeBERTa computes attention itself (no AttentionInterface): abc says so before training,
    in one message naming the redistribution, while a DistilBERT / GPT-2 RM passes the probe."""
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    from red_cli.config.schema import RewardModelConfig
    from red_cli.modes import get_mode
    from red_cli.reward.pipeline import RewardPipeline
    from red_cli.reward.scoring import attention_row_problem
    from red_cli.reward.stack import RewardStack

    deberta = DebertaV2ForSequenceClassification(DebertaV2Config(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, num_labels=1, pad_token_id=PAD)).eval()
    assert attention_row_problem(deberta)
    assert attention_row_problem(_distilbert(1)) is None
    assert attention_row_problem(_gpt2(1)) is None

    class Tok:
        pad_token_id, eos_token_id = PAD, SEP

        def get_vocab(self):
            return {"a": 5}

    rm_cfg = RewardModelConfig(name="deberta", path="unused", max_length=64)
    with pytest.raises(ConfigError, match="redistribution=abc cannot read"):
        RewardPipeline(RewardStack(rm_cfg, deberta, Tok()), Tok(), get_mode("abc").needs,
                       users="redistribution=abc")
