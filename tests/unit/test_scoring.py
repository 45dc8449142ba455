"""Reward-model scoring on tiny random-init models built from config (no hub, no toy models).

The reference for every number is the model run on ONE sequence, unpadded: HF's classifier
forward on a left-padded batch is not a reference (GPT-2 numbers positions from the edge).
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2Model,
    LlamaConfig,
    LlamaForSequenceClassification,
    Qwen2Config,
    Qwen2ForSequenceClassification,
)

from red_cli.models.anatomy import is_causal_rm
from red_cli.reward.scoring import ScoreOutput, prefix_scores_exact, score_batch
from red_cli.rlhf.masking import last_true_index, position_ids_from_mask

VOCAB, PAD, EOS, CLS, SEP = 64, 0, 2, 3, 4


def _gpt2():
    return GPT2ForSequenceClassification(
        GPT2Config(
            vocab_size=VOCAB,
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=64,
            num_labels=1,
            pad_token_id=PAD,
            bos_token_id=1,
            eos_token_id=EOS,
        )
    )


def _llama():
    return LlamaForSequenceClassification(
        LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
            num_labels=1,
            pad_token_id=PAD,
            bos_token_id=1,
            eos_token_id=EOS,
        )
    )


def _qwen2():
    return Qwen2ForSequenceClassification(
        Qwen2Config(
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            intermediate_size=64,
            max_position_embeddings=64,
            num_labels=1,
            pad_token_id=PAD,
            bos_token_id=1,
            eos_token_id=EOS,
        )
    )


def _bert():
    return BertForSequenceClassification(
        BertConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
            num_labels=1,
            pad_token_id=PAD,
        )
    )


CAUSAL = {"gpt2": _gpt2, "llama": _llama, "qwen2": _qwen2}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matmuls: a second intra-op thread only adds sync cost (100x on a loaded box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models():
    """name -> (sdpa model, eager twin with the same weights)."""
    torch.manual_seed(0)
    out = {}
    for name, build in {**CAUSAL, "bert": _bert}.items():
        model = build().eval()
        eager = copy.deepcopy(model)
        eager.set_attn_implementation("eager")
        out[name] = (model, eager)
    return out


def _sequences(bert: bool = False) -> list[torch.Tensor]:
    """Rows of different lengths: two end with EOS/SEP, one is truncated without it."""
    g = torch.Generator().manual_seed(1)
    body = [torch.randint(5, VOCAB, (n,), generator=g) for n in (6, 3, 8)]
    if bert:
        return [torch.cat([torch.tensor([CLS]), b, torch.tensor([SEP])]) for b in body]
    return [
        torch.cat([body[0], torch.tensor([EOS])]),
        body[1],
        torch.cat([body[2], torch.tensor([EOS])]),
    ]


def _pad(seqs: list[torch.Tensor], side: str) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    length = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), length), PAD)
    mask = torch.zeros((len(seqs), length), dtype=torch.long)
    offsets = []
    for i, s in enumerate(seqs):
        off = length - len(s) if side == "left" else 0
        ids[i, off : off + len(s)] = s
        mask[i, off : off + len(s)] = 1
        offsets.append(off)
    return ids, mask, offsets


def _alone(model, seq: torch.Tensor) -> float:
    with torch.no_grad():
        return model(input_ids=seq[None]).logits[0, 0].item()


def test_position_ids_count_real_tokens_only():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 1, 1, 0]])
    assert position_ids_from_mask(mask).tolist() == [
        [0, 0, 0, 1, 2],
        [0, 1, 2, 2, 2],
        [0, 0, 1, 2, 2],
    ]


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("name", sorted(CAUSAL))
def test_causal_scores_match_unpadded_single_sequences(models, name, side):
    model, _ = models[name]
    assert model.config._attn_implementation == "sdpa"
    seqs = _sequences()
    ids, mask, offsets = _pad(seqs, side)
    out = score_batch(model, ids, mask, positions=True, attention=False)
    assert out.attention_row is None
    for i, s in enumerate(seqs):
        assert out.scores[i].item() == pytest.approx(_alone(model, s), abs=1e-5)
        for j in range(len(s)):
            prefix = _alone(model, s[: j + 1])
            assert out.position_scores[i, offsets[i] + j].item() == pytest.approx(prefix, abs=1e-5)
    assert (out.position_scores[mask == 0] == 0).all()
    sparse = score_batch(model, ids, mask, positions=False, attention=False)
    assert sparse.position_scores is None
    torch.testing.assert_close(sparse.scores, out.scores, atol=1e-5, rtol=0)


def test_hf_padded_forward_is_not_the_reference(models):
    """Why we run the backbone ourselves: GPT-2's own classifier shifts left-padded positions."""
    model, _ = models["gpt2"]
    seqs = _sequences()
    ids, mask, _ = _pad(seqs, "left")
    with torch.no_grad():
        hf = model(input_ids=ids, attention_mask=mask).logits[:, 0]
    ours = score_batch(model, ids, mask, positions=False, attention=False).scores
    alone = torch.tensor([_alone(model, s) for s in seqs])
    torch.testing.assert_close(ours, alone, atol=1e-5, rtol=0)
    assert (hf - alone).abs().max() > 1e-4


@pytest.mark.parametrize("name", sorted(CAUSAL))
def test_attention_row_matches_eager_with_left_padding(models, name, monkeypatch):
    model, eager = models[name]
    assert model.config._attn_implementation == "sdpa"
    assert eager.config._attn_implementation == "eager"
    seqs = _sequences()
    ids, mask, offsets = _pad(seqs, "left")

    # The scoring model keeps SDPA in every layer (the row is recomputed beside it).
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(
        torch.nn.functional,
        "scaled_dot_product_attention",
        lambda *a, **k: calls.append(1) or sdpa(*a, **k),
    )
    out = score_batch(model, ids, mask, positions=False, attention=True)
    monkeypatch.undo()
    assert len(calls) == model.config.num_hidden_layers
    assert model.config._attn_implementation == "sdpa"

    with torch.no_grad():
        maps = eager(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids_from_mask(mask),
            output_attentions=True,
        ).attentions
    assert len(maps) == model.config.num_hidden_layers
    pooled = last_true_index(mask.bool())  # causal: the last real token
    expected = maps[-1].mean(1)[torch.arange(len(seqs)), pooled]  # [b, L]
    torch.testing.assert_close(out.attention_row, expected * mask, atol=1e-5, rtol=0)
    for i, s in enumerate(seqs):  # and the unpadded single-sequence eager row
        with torch.no_grad():
            alone = eager(input_ids=s[None], output_attentions=True).attentions[-1][0].mean(0)[-1]
        torch.testing.assert_close(out.attention_row[i, offsets[i] :], alone, atol=1e-5, rtol=0)
    assert (out.attention_row[mask == 0] == 0).all()
    torch.testing.assert_close(out.attention_row.sum(-1), torch.ones(len(seqs)))


def test_one_pass_gives_all_three_outputs(models):
    model, _ = models["llama"]
    ids, mask, _ = _pad(_sequences(), "right")
    out = score_batch(model, ids, mask, positions=True, attention=True)
    assert isinstance(out, ScoreOutput)
    assert out.scores.shape == (3,) and out.position_scores.shape == ids.shape
    assert out.attention_row.shape == ids.shape
    pooled = last_true_index(mask.bool())  # causal: the last real token
    torch.testing.assert_close(out.scores, out.position_scores[torch.arange(3), pooled])


def test_prefix_scores_exact_agrees_with_one_causal_pass(models):
    model, _ = models["gpt2"]
    ids, mask, _ = _pad(_sequences(), "left")
    one_pass = score_batch(model, ids, mask, positions=True, attention=False).position_scores
    start = torch.tensor([5, 7, 0])
    with pytest.warns(UserWarning, match="extra sequence forwards"):
        exact = prefix_scores_exact(model, ids, mask, start, chunk_size=4)
    keep = (torch.arange(ids.shape[1]) >= start[:, None]) & mask.bool()
    torch.testing.assert_close(exact[keep], one_pass[keep], atol=1e-5, rtol=0)
    assert (exact[~keep] == 0).all()


def test_is_causal_rm(models):
    for name in CAUSAL:
        assert is_causal_rm(models[name][0])
    assert not is_causal_rm(models["bert"][0])


@pytest.mark.parametrize("side", ["left", "right"])
def test_bidirectional_scores_and_cls_attention_row(models, side):
    model, eager = models["bert"]
    seqs = _sequences(bert=True)
    ids, mask, offsets = _pad(seqs, side)
    out = score_batch(model, ids, mask, positions=False, attention=True)
    for i, s in enumerate(seqs):
        assert out.scores[i].item() == pytest.approx(_alone(model, s), abs=1e-5)
        with torch.no_grad():
            cls_row = eager(input_ids=s[None], output_attentions=True).attentions[-1][0].mean(0)[0]
        torch.testing.assert_close(
            out.attention_row[i, offsets[i] : offsets[i] + len(s)], cls_row, atol=1e-5, rtol=0
        )
    assert (out.attention_row[mask == 0] == 0).all()


def test_bidirectional_positions_refused_without_prefix_passes(models):
    model, _ = models["bert"]
    ids, mask, _ = _pad(_sequences(bert=True), "left")
    with pytest.raises(ValueError, match="reward_model.allow_prefix_passes"):
        score_batch(model, ids, mask, positions=True, attention=False, allow_prefix_passes=False)


def test_bidirectional_prefix_scores_are_exact_and_re_terminated(models):
    """Prefix ending at j is scored as [CLS] tok..j [SEP], as the tokenizer encodes that text."""
    model, _ = models["bert"]
    seqs = _sequences(bert=True)
    seqs[1] = seqs[1][:-1]  # truncated without SEP: prefixes are not re-terminated
    ids, mask, offsets = _pad(seqs, "left")
    start = torch.tensor([offsets[0] + 2, offsets[1], offsets[2] + 5])
    with pytest.warns(UserWarning, match="extra sequence forwards"):
        out = score_batch(
            model,
            ids,
            mask,
            positions=True,
            attention=False,
            prefix_start=start,
            terminator_id=SEP,
            chunk_size=5,
        )
    for i, s in enumerate(seqs):
        terminated = int(s[-1]) == SEP
        for j in range(len(s)):
            col = offsets[i] + j
            if col < start[i]:
                assert out.position_scores[i, col] == 0
                continue
            prefix = s[: j + 1]
            if terminated and j < len(s) - 1:
                prefix = torch.cat([prefix, torch.tensor([SEP])])
            assert out.position_scores[i, col].item() == pytest.approx(
                _alone(model, prefix), abs=1e-5
            )
        assert out.scores[i].item() == pytest.approx(_alone(model, s), abs=1e-5)


def test_model_without_reward_head_is_a_clear_error():
    model = GPT2Model(GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=1, n_head=2, n_positions=16))
    ids, mask, _ = _pad(_sequences(), "left")
    with pytest.raises(ValueError, match="cannot find the reward head"):
        score_batch(model.eval(), ids, mask, positions=False, attention=False)
