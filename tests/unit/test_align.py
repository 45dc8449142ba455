"""Character-offset alignment of RM tokens onto policy tokens, on tokenizers built in-test."""

from __future__ import annotations

import re

import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GPT2Config, GPT2ForSequenceClassification, PreTrainedTokenizerFast

from red_cli.reward.align import (
    build_rm_batch,
    identity_rm_batch,
    policy_token_spans,
    project_to_policy,
    render,
    to_policy_tokens,
    to_policy_values,
    use_identity,
)
from red_cli.reward.scoring import score_batch


def _pieces_tokenizer(pieces: list[str], eos_appended: bool = False) -> PreTrainedTokenizerFast:
    """A tokenizer that splits text into exactly the listed pieces (longest match wins)."""
    specials = ["<pad>", "<eos>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials + pieces)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    pattern = "|".join(re.escape(p) for p in sorted(pieces, key=len, reverse=True))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    tok.decoder = decoders.Fuse()
    if eos_appended:
        tok.post_processor = processors.TemplateProcessing(
            single="$A <eos>", special_tokens=[("<eos>", vocab["<eos>"])]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )


PROMPT_PIECES = ["Review", ":", " "]
# Policy: "unbelievably good" -> un | believ | ably | " good"  (" go"/"od" only if forced)
POLICY = _pieces_tokenizer(PROMPT_PIECES + ["un", "believ", "ably", " good", " go", "od"])
# RM: "unbelievably good" -> unbeliev | ably | " go" | od, then the RM appends <eos>
RM = _pieces_tokenizer(PROMPT_PIECES + ["unbeliev", "ably", " go", "od"], eos_appended=True)

CORPUS = [
    "the movie was unbelievably good, I loved it!",
    "a terrible film: not good at all.",
    "héllo wörld, émoji 😀 ok?",
    "Plot twists everywhere; acting superb.",
    "I would not watch it again, sadly.",
]


def _bpe_tokenizer() -> PreTrainedTokenizerFast:
    """GPT-2-style byte-level BPE trained on the corpus (policy side)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<pad>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 3, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def _wordpiece_tokenizer() -> PreTrainedTokenizerFast:
    """BERT-style WordPiece with [CLS] ... [SEP] (RM side)."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    )
    tok.train_from_iterator(CORPUS * 3, trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
    )


BPE, WORDPIECE = _bpe_tokenizer(), _wordpiece_tokenizer()


def _policy_ids(tokenizer, response: str, eos: bool = True) -> list[int]:
    ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    return ids + [tokenizer.eos_token_id] if eos else ids


def _real(batch, i, field):
    return getattr(batch, field)[i][batch.attention_mask[i].bool()].tolist()


def test_render_tracks_the_response_span():
    text, start, end = render("User: {prompt}\nBot: {response}{{end}}", "hi", "yo")
    assert text == "User: hi\nBot: yo{end}" and text[start:end] == "yo"
    with pytest.raises(ValueError, match="reward_model.template"):
        render("{prompt}{answer}", "a", "b")
    with pytest.raises(ValueError, match="must contain"):
        render("{prompt}", "a", "b")


def test_policy_spans_fast_path_and_incremental_decode_fallback():
    ids = _policy_ids(POLICY, "unbelievably good")
    # un believ ably " good" <eos>(empty span at the end)
    assert policy_token_spans("unbelievably good", ids, POLICY) == [
        (0, 2),
        (2, 8),
        (8, 12),
        (12, 17),
        (17, 17),
    ]
    # Generated ids need not be the canonical encoding: " go" + "od" forces incremental decoding.
    forced = [POLICY.convert_tokens_to_ids(t) for t in ["un", "believ", "ably", " go", "od"]]
    assert policy_token_spans("unbelievably good", forced, POLICY) == [
        (0, 2),
        (2, 8),
        (8, 12),
        (12, 15),
        (15, 17),
    ]
    with pytest.raises(ValueError, match="skip_special_tokens"):
        policy_token_spans("something else", forced, POLICY)


def test_hand_built_split_lands_where_expected():
    """RM pieces land on the policy token holding their LAST character; <eos> on the last."""
    batch = build_rm_batch(
        ["Review: "],
        ["unbelievably good"],
        [_policy_ids(POLICY, "unbelievably good")],
        POLICY,
        RM,
        max_length=32,
    )
    assert RM.convert_ids_to_tokens(_real(batch, 0, "input_ids")) == [
        "Review",
        ":",
        " ",
        "unbeliev",
        "ably",
        " go",
        "od",
        "<eos>",
    ]
    # policy: 0 un, 1 believ, 2 ably, 3 " good", 4 <eos>
    assert _real(batch, 0, "to_policy") == [-1, -1, -1, 1, 2, 3, 3, 4]
    assert _real(batch, 0, "response_mask") == [False] * 3 + [True] * 5
    assert batch.prompt_last_index.tolist() == [2]  # the " " before the response: R(x)
    assert batch.terminator_id == RM.eos_token_id
    rewards = torch.tensor([[100.0, 200, 300, 1, 2, 3, 4, 5]])
    assert to_policy_tokens(rewards, batch, 5).tolist() == [[0.0, 1, 2, 7, 5]]


def test_hand_built_split_other_direction_truncated_response():
    """Policy splits coarser than the RM, and the response was truncated (no EOS)."""
    policy = _pieces_tokenizer(PROMPT_PIECES + ["unbeliev", "ably", " go", "od"])
    rm = _pieces_tokenizer(PROMPT_PIECES + ["un", "believ", "ably", " good"])
    batch = build_rm_batch(
        ["Review: "],
        ["unbelievably go"],
        [_policy_ids(policy, "unbelievably go", eos=False)],
        policy,
        rm,
        max_length=32,
    )
    assert rm.convert_ids_to_tokens(_real(batch, 0, "input_ids")) == [
        "Review",
        ":",
        " ",
        "un",
        "believ",
        "ably",
        " ",
        "<unk>",
    ]
    # policy: 0 unbeliev, 1 ably, 2 " go"; nothing after the last char, no EOS anywhere
    assert _real(batch, 0, "to_policy") == [-1, -1, -1, 0, 0, 1, 2, 2]
    assert batch.terminator_id is None


def test_template_suffix_goes_to_the_last_policy_token():
    batch = build_rm_batch(
        ["Review"],
        ["unbelievably good"],
        [_policy_ids(POLICY, "unbelievably good")],
        POLICY,
        RM,
        template="{prompt}: {response} ",
        max_length=32,
    )
    assert RM.convert_ids_to_tokens(_real(batch, 0, "input_ids"))[-3:] == ["od", " ", "<eos>"]
    assert _real(batch, 0, "to_policy")[-4:] == [3, 3, 4, 4]


def _cross_batch(padding_side: str, max_length: int = 96):
    prompts = ["Review: ", "I say: ", "Plot: twists ", ""]
    responses = ["the movie was unbelievably good!", "héllo wörld 😀 ok", "superb.", "not good"]
    ids = [_policy_ids(BPE, r) for r in responses[:3]] + [_policy_ids(BPE, responses[3], eos=False)]
    batch = build_rm_batch(
        prompts, responses, ids, BPE, WORDPIECE, max_length=max_length, padding_side=padding_side
    )
    return batch, ids


@pytest.mark.parametrize("side", ["left", "right"])
def test_random_rewards_sum_preserved_and_values_telescope(side):
    batch, ids = _cross_batch(side)
    t = max(len(x) for x in ids)
    g = torch.Generator().manual_seed(0)
    rewards = torch.randn(batch.input_ids.shape, generator=g, dtype=torch.float64)
    out = to_policy_tokens(rewards, batch, t)
    region = (rewards * batch.response_mask).sum(-1)
    torch.testing.assert_close(out.sum(-1), region, atol=1e-12, rtol=0)
    for i, n in enumerate(len(x) for x in ids):
        real = batch.to_policy[i][batch.attention_mask[i].bool()]
        mapped = real[real >= 0]
        assert (mapped.diff() >= 0).all() and mapped.max() == n - 1  # monotone, reaches the end
        assert (out[i, n:] == 0).all()
        assert batch.input_ids[i][batch.attention_mask[i].bool()][0] == WORDPIECE.cls_token_id
        assert batch.response_mask[i, batch.prompt_last_index[i]] == (
            batch.prompt_last_index[i] < 0
        )
    # Prefix values read per policy token: their time differences (first one against R(x))
    # equal the RM-token differences summed onto policy tokens.
    values = to_policy_values(rewards, batch, t)
    rx = rewards.gather(1, batch.prompt_last_index.clamp(min=0)[:, None])
    rm_diff = rewards - torch.cat([rewards[:, :1], rewards[:, :-1]], 1)
    first = batch.response_mask.int().argmax(-1)
    rm_diff[torch.arange(4), first] = rewards[torch.arange(4), first] - rx[:, 0]
    pol_diff = values - torch.cat([rx, values[:, :-1]], 1)
    mask = torch.arange(t) < batch.policy_lengths[:, None]
    torch.testing.assert_close(
        pol_diff * mask, to_policy_tokens(rm_diff, batch, t), atol=1e-12, rtol=0
    )


def test_left_and_right_padding_hold_the_same_rows():
    left, _ = _cross_batch("left")
    right, _ = _cross_batch("right")
    for field in ("input_ids", "to_policy", "response_mask"):
        for i in range(4):
            assert _real(left, i, field) == _real(right, i, field)
    assert (left.attention_mask[:, -1] == 1).all() and (right.attention_mask[:, 0] == 1).all()
    n_before = (left.to_policy < 0) & left.attention_mask.bool()
    assert (
        left.prompt_last_index - (1 - left.attention_mask).sum(-1) == right.prompt_last_index
    ).all()
    assert (n_before.sum(-1) - 1 == right.prompt_last_index).all()


def test_sep_appended_by_rm_goes_to_last_policy_token():
    batch, ids = _cross_batch("right")
    for i, n in enumerate(len(x) for x in ids):
        last = int(batch.attention_mask[i].sum()) - 1
        assert batch.input_ids[i, last] == WORDPIECE.sep_token_id
        assert batch.to_policy[i, last] == n - 1  # policy EOS (rows 0-2) or last word (row 3)
    assert batch.terminator_id == WORDPIECE.sep_token_id


@pytest.mark.parametrize("eos", [True, False])
def test_sep_after_trailing_whitespace_the_rm_drops_goes_to_last_policy_token(eos):
    """WordPiece drops the response's trailing space; its [SEP] still follows the whole
    response, so its credit lands on the policy EOS (or, truncated, the last policy token,
    the trailing "Ġ"), not on the last word."""
    response = "the movie was good "
    ids = _policy_ids(BPE, response, eos=eos)
    n = len(ids)
    assert BPE.convert_ids_to_tokens(ids)[-3:] == (
        ["Ġgood", "Ġ", "<eos>"] if eos else ["s", "Ġgood", "Ġ"]
    )
    good = BPE.convert_ids_to_tokens(ids).index("Ġgood")
    batch = build_rm_batch(["Review: "], [response], [ids], BPE, WORDPIECE, max_length=32)
    assert WORDPIECE.convert_ids_to_tokens(_real(batch, 0, "input_ids"))[-2:] == ["good", "[SEP]"]
    assert _real(batch, 0, "to_policy")[-2:] == [good, n - 1]
    sep = (batch.input_ids == WORDPIECE.sep_token_id).double()  # one-hot reward on [SEP]
    out = to_policy_tokens(sep, batch, n)
    assert out.tolist() == [[0.0] * (n - 1) + [1.0]]


def _byte_bpe(trim_offsets: bool = True) -> PreTrainedTokenizerFast:
    """Byte-level BPE whose merges split " 😀" (bytes 20 F0 9F 98 80) as "ĠðŁ" + "ĺĢ": the
    first token holds the space and the emoji's first two bytes."""
    vocab = {"<pad>": 0, "<eos>": 1}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    merges = [("Ġ", "ð"), ("Ġð", "Ł"), ("ĺ", "Ģ"), ("o", "k"), ("Ġ", "ok")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = Tokenizer(models.BPE(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=trim_offsets)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


@pytest.mark.parametrize("trim", [True, False])
def test_space_split_with_a_multibyte_char_belongs_to_the_token_holding_it(trim):
    """ "ok 😀 ok" -> ok | ĠðŁ | ĺĢ | Ġok: the space is in ĠðŁ's bytes, the emoji is completed
    by ĺĢ (its last byte). trim_offsets reports ĠðŁ as (3, 4) like ĺĢ, dropping the space."""
    policy = _byte_bpe(trim)
    response = "ok 😀 ok"
    ids = _policy_ids(policy, response)
    assert policy.convert_ids_to_tokens(ids) == ["ok", "ĠðŁ", "ĺĢ", "Ġok", "<eos>"]
    # ĠðŁ holds the space, ĺĢ the emoji, on both code paths: offsets (re-encoding gives ids)
    # and incremental decoding (non-canonical "o" "k" first).
    assert policy_token_spans(response, ids, policy)[1:3] == [(2, 3), (3, 4)]
    forced = [policy.convert_tokens_to_ids(t) for t in ["o", "k"]] + ids[1:]
    assert policy_token_spans(response, forced, policy) == [
        (0, 1),
        (1, 2),
        (2, 3),
        (3, 4),
        (4, 7),
        (7, 7),
    ]

    rm = _pieces_tokenizer(["ok", " ", "😀"], eos_appended=True)
    batch = build_rm_batch([""], [response], [ids], policy, rm, max_length=32)
    assert rm.convert_ids_to_tokens(_real(batch, 0, "input_ids")) == [
        "ok",
        " ",
        "😀",
        " ",
        "ok",
        "<eos>",
    ]
    # policy: 0 ok, 1 ĠðŁ, 2 ĺĢ, 3 Ġok, 4 <eos>; the first space lands on ĠðŁ, not ĺĢ
    assert _real(batch, 0, "to_policy") == [0, 1, 2, 3, 3, 4]
    for k, target in enumerate([0, 1, 2, 3, 3, 4]):  # one-hot RM rewards, sums exact
        onehot = torch.zeros(1, 6, dtype=torch.float64)
        onehot[0, k] = 1.0
        out = to_policy_tokens(onehot, batch, 5)
        assert out.sum().item() == 1.0 and out[0, target].item() == 1.0

    # The same tokenizer through text (non-plain template) maps every token to itself.
    same = build_rm_batch(["Q:"], [response], [ids[:-1]], policy, policy, "{prompt}\n{response}")
    region = same.response_mask[0]
    assert same.input_ids[0][region].tolist() == ids[:-1]
    assert same.to_policy[0][region].tolist() == [0, 1, 2, 3]


def test_left_truncation_keeps_cls_and_the_response():
    full, _ = _cross_batch("right")
    short, _ = _cross_batch("right", max_length=12)
    for i in range(4):
        ids_full, ids_short = _real(full, i, "input_ids"), _real(short, i, "input_ids")
        region = int(full.response_mask[i].sum())
        assert len(ids_short) == min(len(ids_full), 12)
        assert ids_short[0] == WORDPIECE.cls_token_id
        assert ids_short[-region:] == ids_full[-region:]
        assert _real(short, i, "to_policy")[-region:] == _real(full, i, "to_policy")[-region:]
    with pytest.raises(ValueError, match="reward_model.max_length"):
        _cross_batch("right", max_length=4)


def test_identity_path():
    assert use_identity(BPE, _bpe_tokenizer())
    assert not use_identity(BPE, WORDPIECE)
    assert not use_identity(BPE, BPE, template="Q: {prompt}{response}")
    query = torch.tensor([[0, 0, 5, 6], [7, 8, 9, 10]])
    qmask = (query != 0).long()
    response = torch.tensor([[11, 12, 1, 0], [13, 0, 0, 0]])
    rmask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    batch = identity_rm_batch(query, qmask, response, rmask)
    assert batch.input_ids.tolist() == torch.cat([query, response], 1).tolist()
    assert batch.to_policy.tolist() == [
        [-1, -1, -1, -1, 0, 1, 2, -1],
        [-1, -1, -1, -1, 0, -1, -1, -1],
    ]
    assert batch.prompt_last_index.tolist() == [3, 3]
    assert batch.policy_lengths.tolist() == [3, 1]
    rewards = torch.arange(16.0).view(2, 8)
    assert to_policy_tokens(rewards, batch, 4).tolist() == [[4.0, 5, 6, 0], [12, 0, 0, 0]]
    assert to_policy_values(rewards, batch, 4).tolist() == [[4.0, 5, 6, 0], [12, 0, 0, 0]]


def test_same_tokenizer_build_matches_identity_mapping():
    """Going through text with the same tokenizer maps every response token to itself
    (when the prompt/response boundary is a token boundary)."""
    response = " the movie was unbelievably good!"
    ids = _policy_ids(BPE, response, eos=False)
    batch = build_rm_batch(["Review:"], [response], [ids], BPE, BPE, max_length=64)
    region = batch.response_mask[0]
    assert batch.input_ids[0][region].tolist() == ids
    assert batch.to_policy[0][region].tolist() == list(range(len(ids)))


def test_end_to_end_td_telescopes_on_policy_tokens():
    """Cross-tokenizer: score the RM batch once and project onto policy tokens."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: extra threads only add sync cost on a busy box
    try:
        _end_to_end()
    finally:
        torch.set_num_threads(threads)


def _end_to_end():
    torch.manual_seed(0)
    rm = GPT2ForSequenceClassification(
        GPT2Config(
            vocab_size=WORDPIECE.vocab_size,
            n_embd=16,
            n_layer=1,
            n_head=2,
            n_positions=128,
            num_labels=1,
            pad_token_id=WORDPIECE.pad_token_id,
        )
    ).eval()
    batch, ids = _cross_batch("left")
    t = max(len(x) for x in ids)
    out = score_batch(rm, batch.input_ids, batch.attention_mask, positions=True, attention=True)
    pol = project_to_policy(out, batch, t)
    lengths = batch.policy_lengths
    last = pol.prefix_scores.gather(1, (lengths - 1)[:, None])[:, 0]
    torch.testing.assert_close(last, pol.scores)  # P at the last policy token is r_C
    torch.testing.assert_close(
        pol.prompt_scores, out.position_scores.gather(1, batch.prompt_last_index[:, None])[:, 0]
    )
    region_mass = (out.attention_row * batch.response_mask).sum(-1)
    torch.testing.assert_close(pol.attention.sum(-1), region_mass)
    assert (pol.attention >= 0).all()
