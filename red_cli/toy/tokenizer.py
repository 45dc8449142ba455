"""The toy task's two tokenizers, trained with `tokenizers` on the generated corpus.

- `train_bpe`: byte-level BPE (GPT-2 style: a word's leading space belongs to its token),
  used by the policy and by the `toy` and `toy_bidir` reward models.
- `train_wordpiece`: WordPiece on whitespace/punctuation-split words (spaces belong to no
  token, sub-words are `##`-prefixed), used by `toy_xtok` to exercise a policy/RM
  tokenizer mismatch.

Both prepend `<bos>` in their post-processor, so `tokenizer(text)` gives exactly what the
models were trained on (the policy generates after `<bos> prompt`; the RMs pool at the last
real token, or at `<bos>` for the bidirectional one). Neither appends `<eos>`. Offsets are
character offsets into the text (fast tokenizers), untrimmed for the BPE so that every
character of a text belongs to exactly one token there.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

BOS, EOS, PAD, UNK = "<bos>", "<eos>", "<pad>", "<unk>"


def _wrap(tok, padding_side: str, model_max_length: int):
    from transformers import PreTrainedTokenizerFast

    bos_id = tok.token_to_id(BOS)
    from tokenizers import processors

    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]
    )
    # No token_type_ids: GPT-2 would add wte(token_type_ids) to its embeddings.
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        unk_token=UNK if tok.token_to_id(UNK) is not None else None,
        model_input_names=["input_ids", "attention_mask"], padding_side=padding_side,
        model_max_length=model_max_length, clean_up_tokenization_spaces=False,
    )


def train_bpe(texts: Iterable[str], vocab_size: int, padding_side: str = "right",
              model_max_length: int = 128):
    """Byte-level BPE -> PreTrainedTokenizerFast with <bos>/<eos>/<pad>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[PAD, BOS, EOS], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    return _wrap(tok, padding_side, model_max_length)


def wordpiece_vocab(texts: Iterable[str], vocab_size: int) -> dict[str, int]:
    """A deterministic WordPiece vocabulary: special tokens; every character seen, alone and
    as a "##" continuation; the most frequent whole words (3/4 of the remaining slots);
    then prefixes and "##" suffixes of the other words, scored by occurrences x length.
    Ties are broken by the token itself, so rare words split into pieces.

    (`tokenizers`' WordPieceTrainer, and its BpeTrainer with a continuation prefix, give a
    different vocabulary from run to run: they number "##x" pieces in hash-map order.)
    """
    from tokenizers import pre_tokenizers

    split = pre_tokenizers.BertPreTokenizer().pre_tokenize_str
    words: Counter[str] = Counter()
    for text in texts:
        words.update(w for w, _ in split(text))
    chars = sorted({c for w in words for c in w})
    tokens = [PAD, BOS, EOS, UNK, *chars, *("##" + c for c in chars)]
    slots = max(0, vocab_size - len(tokens))
    by_count = sorted((w for w in words if w not in tokens), key=lambda w: (-words[w], w))
    whole, rest = by_count[: slots * 3 // 4], by_count[slots * 3 // 4 :]
    tokens += whole
    pieces: Counter[str] = Counter()
    for word in rest:
        for i in range(2, len(word)):
            pieces[word[:i]] += words[word] * i
            pieces["##" + word[-i:]] += words[word] * i
    taken = set(tokens)
    ranked = sorted((t for t in pieces if t not in taken), key=lambda t: (-pieces[t], t))
    tokens += ranked[: max(0, vocab_size - len(tokens))]
    return {t: i for i, t in enumerate(tokens)}


def train_wordpiece(texts: Iterable[str], vocab_size: int, padding_side: str = "right",
                    model_max_length: int = 128):
    """WordPiece (greedy longest match, "##" continuations) over whitespace/punctuation
    words -> PreTrainedTokenizerFast with <bos>/<eos>/<pad>/<unk>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.WordPiece(vocab=wordpiece_vocab(texts, vocab_size), unk_token=UNK,
                                     continuing_subword_prefix="##"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    return _wrap(tok, padding_side, model_max_length)
