"""Reward-model scoring: sequence score, per-position (prefix) scores, pooled attention row.

Notation: b batch, L RM sequence length (padded), H hidden size.

One call, :func:`score_batch`, gives everything the redistribution modes need:

- ``scores [b]``: the reward head read at the pooled token. Causal RMs pool the LAST real
  token, encoders (BERT-style) the FIRST real token (CLS), both found from the attention mask,
  so left padding, right padding and responses truncated without EOS all work.
- ``position_scores [b, L]`` (td, RED arXiv 2411.08302): ``R(x, y<=t)`` for every position.
  A causal RM gives all of them in the same single forward pass (the head applied to every
  hidden state). An encoder sees future tokens, so each prefix needs its own forward
  (:func:`prefix_scores_exact`, opt-in through ``allow_prefix_passes``).
- ``attention_row [b, L]`` (abc, arXiv 2402.00782): the pooled token's last-layer attention,
  averaged over heads. The model keeps its fast attention (SDPA): only the last layer's
  attention call is routed through a thin wrapper that runs the model's own kernel and
  recomputes the one pooled row from the exact query/key tensors that kernel received
  (after rotary embeddings, QK norms, GQA grouping), so the extra cost is
  O(b * heads * L * head_dim) compute and O(b * heads * L) memory. No layer returns maps.

Scores equal what the model gives each sequence alone, unpadded (the reference is NOT HF's
classifier forward on a padded batch: GPT-2 there numbers positions from the left edge of
the padded row). Position ids are therefore always computed from the attention mask
(``cumsum - 1``), and the head is applied to the backbone's hidden states directly.

Pooling rule versus HF's own: HF's decoder classifiers pool the last token that is not
``pad_token_id``; we pool the last token of the attention mask. They agree whenever
``pad_token_id`` does not occur among the real tokens (it differs when pad == eos and the
text ends with EOS: HF then pools the token before EOS).
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import warnings
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

# Attribute names under which decoder reward models keep their scalar head, in lookup order.
HEAD_NAMES = ("score", "v_head", "value_head", "reward_head")
BACKBONE_NAMES = ("transformer", "model", "backbone")

_ROW_IMPL = "red_pooled_row"


class ScoreOutput(NamedTuple):
    """What one reward-model pass returns.

    scores: [b] float32, reward head at the pooled token (last real token for causal RMs,
        first real token (CLS) for encoders).
    position_scores: [b, L] float32 or None; ``[i, j]`` = the score of the prefix of row i
        ending at j (causal: head at j; encoder: exact per-prefix pass). Zero at padding
        (and, for encoders, before ``prefix_start``).
    attention_row: [b, L] float32 or None; pooled token's last-layer attention over all
        positions, head mean; each row sums to 1 over real tokens, zero at padding.
    """

    scores: Tensor
    position_scores: Tensor | None
    attention_row: Tensor | None


# --------------------------------------------------------------------------- model anatomy


def _unwrap(model: nn.Module) -> nn.Module:
    # A DeepSpeed engine (or DDP) holds the HF model under `.module`.
    while not hasattr(model, "config") and hasattr(model, "module"):
        model = model.module
    return model


def _self_attention_modules(model: nn.Module) -> list[nn.Module]:
    """Innermost modules that own a config and a layer index (or an ``is_causal`` flag): the
    ones that call the AttentionInterface (GPT2Attention, LlamaAttention, BertSelfAttention,
    DistilBertSelfAttention, which has no layer index), in module order."""
    cands = {
        name: m
        for name, m in model.named_modules()
        # Plain attributes live in __dict__; reading it skips nn.Module.__getattr__'s raise.
        if (isinstance(vars(m).get("layer_idx"), int) or isinstance(vars(m).get("is_causal"), bool))
        and "config" in vars(m)
        and not vars(m).get("is_cross_attention", False)
        and "Cross" not in type(m).__name__
    }
    return [
        m
        for name, m in cands.items()
        if not any(other.startswith(name + ".") for other in cands if name)
    ]


def is_causal_rm(model: nn.Module) -> bool:
    """True if the reward model's self-attention is causal (decoder RM: one pass gives every
    prefix score); False for bidirectional encoders (BERT/RoBERTa/DeBERTa-style).

    Read from the attention modules' own ``is_causal`` flag (what the kernel obeys), else
    ``config.is_decoder`` (BERT-family configs), else the head's name (HF decoder
    classifiers call it ``score``, encoders ``classifier``)."""
    model = _unwrap(model)
    flags = {getattr(m, "is_causal", None) for m in _self_attention_modules(model)}
    flags.discard(None)
    if len(flags) == 1:
        return bool(flags.pop())
    is_decoder = getattr(model.config, "is_decoder", None)
    if isinstance(is_decoder, bool):
        return is_decoder
    return any(isinstance(getattr(model, name, None), nn.Module) for name in HEAD_NAMES)


def _causal_parts(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(backbone returning last_hidden_state, scalar head) of a decoder reward model."""
    head = next(
        (getattr(model, n) for n in HEAD_NAMES if isinstance(getattr(model, n, None), nn.Module)),
        None,
    )
    if head is None:
        raise ValueError(
            f"{type(model).__name__}: cannot find the reward head; expected one of the "
            f"attributes {HEAD_NAMES} (HF *ForSequenceClassification decoders use `score`)"
        )
    backbone = getattr(model, "base_model", model)
    if backbone is model:
        backbone = next(
            (
                getattr(model, n)
                for n in BACKBONE_NAMES
                if isinstance(getattr(model, n, None), nn.Module)
            ),
            None,
        )
    if backbone is None:
        raise ValueError(
            f"{type(model).__name__}: cannot find the backbone; expected `base_model_prefix` "
            f"or one of the attributes {BACKBONE_NAMES}"
        )
    out_features = getattr(head, "out_features", 1)
    if out_features != 1:
        raise ValueError(
            f"{type(model).__name__}: the reward head has {out_features} outputs; a reward "
            "model needs num_labels=1"
        )
    return backbone, head


# --------------------------------------------------------------------------- positions


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """[b, L] position ids counting real tokens only (cumsum - 1, clamped at 0), so a
    left-padded row is numbered exactly as the same sequence alone."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def last_real_index(attention_mask: Tensor) -> Tensor:
    """[b] index of the last real token of each row (any padding side)."""
    _check_nonempty(attention_mask)
    idx = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (idx * attention_mask.bool()).argmax(-1)


def first_real_index(attention_mask: Tensor) -> Tensor:
    """[b] index of the first real token of each row (any padding side)."""
    _check_nonempty(attention_mask)
    return attention_mask.bool().int().argmax(-1)


def pooled_index(model: nn.Module, attention_mask: Tensor) -> Tensor:
    """[b] index of the token the reward head reads: last real token for causal RMs, first
    real token (CLS) for encoders."""
    if is_causal_rm(model):
        return last_real_index(attention_mask)
    return first_real_index(attention_mask)


def _check_nonempty(attention_mask: Tensor) -> None:
    if not bool(attention_mask.bool().any(-1).all()):
        raise ValueError("every row of attention_mask needs at least one real token")


def _compact(input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Move each row's real tokens to the front (right padding), keeping their order.
    Returns (ids, mask, order) with ``compact[:, j] = original[:, order[:, j]]``."""
    order = torch.argsort((~attention_mask.bool()).to(torch.int8), dim=1, stable=True)
    return input_ids.gather(1, order), attention_mask.gather(1, order), order


# --------------------------------------------------------------------------- attention row


@dataclass
class _RowRequest:
    inner: str  # the attention implementation the model was loaded with
    pooled: Tensor  # [b] query index whose row we want
    key_mask: Tensor  # [b, L] bool, real tokens
    causal: bool
    row: Tensor | None = None


def _inner_attention(module: nn.Module, name: str):
    if name == "eager":
        # Each HF model file defines its own eager kernel; use that one.
        fn = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
        if fn is None:
            raise ValueError(f"{type(module).__name__}: no eager_attention_forward to wrap")
        return fn
    return ALL_ATTENTION_FUNCTIONS.get_interface(name, None)


def _pooled_row_attention(module, query, key, value, attention_mask, *args, **kwargs):
    """AttentionInterface entry: run the model's own kernel, then recompute one row.

    query [b, h, L, d], key [b, kv, L, d] (kv divides h; head j uses kv head j // (h/kv),
    the grouping of transformers' ``repeat_kv``).
    """
    req: _RowRequest = module._red_row_request
    out = _inner_attention(module, req.inner)(
        module, query, key, value, attention_mask, *args, **kwargs
    )
    if kwargs.get("s_aux") is not None or kwargs.get("sinks") is not None:
        raise NotImplementedError("attention sinks are not supported by the abc attention row")
    scaling = kwargs.get("scaling")
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    b, h, _, d = query.shape
    kv, lk = key.shape[1], key.shape[2]
    ar = torch.arange(b, device=query.device)
    q = query[ar, :, req.pooled].float().reshape(b, kv, h // kv, d)  # [b, kv, g, d]
    logits = torch.einsum("bkgd,bkld->bkgl", q, key.float()).reshape(b, h, lk) * scaling
    softcap = kwargs.get("softcap")
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    if isinstance(attention_mask, Tensor) and attention_mask.ndim == 4:
        # The mask the kernel used (padding, causality, sliding window): take the pooled row.
        m = attention_mask.expand(b, -1, query.shape[2], -1)[ar, :, req.pooled]  # [b, 1|h, L]
        logits = logits.masked_fill(~m, -math.inf) if m.dtype == torch.bool else logits + m.float()
    else:
        allowed = req.key_mask[:, :lk]
        if req.causal:
            allowed = allowed & (torch.arange(lk, device=query.device) <= req.pooled[:, None])
        logits = logits.masked_fill(~allowed[:, None, :], -math.inf)
    row = torch.softmax(logits, dim=-1).mean(1)
    req.row = torch.where(req.key_mask[:, :lk], row, torch.zeros_like(row))
    return out


AttentionInterface.register(_ROW_IMPL, _pooled_row_attention)


_LAST_ATTENTION: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()


def _last_self_attention(model: nn.Module) -> nn.Module:
    """The last layer's self-attention module (looked up once per model)."""
    module = _LAST_ATTENTION.get(model)
    if module is None:
        modules = _self_attention_modules(model)
        if not modules:
            raise ValueError(
                f"{type(model).__name__}: no self-attention module with `config` and "
                "`layer_idx` or `is_causal`; the abc attention row needs a transformers model "
                "using the AttentionInterface"
            )
        # By layer index where modules have one, else the last in module order.
        order = {id(m): i for i, m in enumerate(modules)}
        module = _LAST_ATTENTION[model] = max(
            modules, key=lambda m: (vars(m).get("layer_idx", -1), order[id(m)])
        )
    return module


@contextlib.contextmanager
def _capture_pooled_row(
    model: nn.Module, pooled: Tensor, key_mask: Tensor, causal: bool
) -> Iterator[_RowRequest]:
    """Route only the LAST layer's attention call through :func:`_pooled_row_attention`.

    That module gets a shallow copy of the config naming our implementation; the model's own
    config (and hence the mask it builds and every other layer) keeps its implementation.
    """
    module = _last_self_attention(model)
    original = module.config
    inner = original._attn_implementation or "eager"
    if inner == _ROW_IMPL:
        raise RuntimeError("nested attention-row capture on the same model")
    shim = copy.copy(original)
    # Bypass the property setter: it would recurse into sub-configs the copy shares.
    shim._attn_implementation_internal = _ROW_IMPL
    req = _RowRequest(inner=inner, pooled=pooled, key_mask=key_mask.bool(), causal=causal)
    module.config = shim
    module._red_row_request = req
    try:
        yield req
    finally:
        module.config = original
        del module._red_row_request
    if req.row is None:
        raise RuntimeError(
            f"{type(module).__name__} did not dispatch through transformers' AttentionInterface; "
            "cannot recompute the attention row"
        )


# --------------------------------------------------------------------------- scoring


def attention_row_problem(model: nn.Module) -> str | None:
    """Why abc's attention row cannot be read from ``model`` (None if it can): one forward
    of two tokens through the same capture abc uses, run once at start-up."""
    model = _unwrap(model)
    device = next(model.parameters()).device
    ids = torch.zeros((1, 2), dtype=torch.long, device=device)
    try:
        score_batch(model, ids, torch.ones_like(ids), positions=False, attention=True)
    except (ValueError, RuntimeError, NotImplementedError) as err:
        return str(err)
    return None


def score_batch(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    *,
    positions: bool,
    attention: bool,
    prefix_start: Tensor | None = None,
    allow_prefix_passes: bool = True,
    terminator_id: int | None = None,
    chunk_size: int = 64,
) -> ScoreOutput:
    """Score a padded batch with a reward model (no gradients).

    Args:
        model: HF sequence-classification reward model (num_labels=1), in eval mode.
        input_ids, attention_mask: [b, L]; any padding side (holes allowed).
        positions: also return ``position_scores`` [b, L] (td).
        attention: also return ``attention_row`` [b, L] (abc).
        prefix_start: [b] first index whose prefix score is needed (encoders only; the RM
            batch's ``prompt_last_index`` for td). Default: the first real token.
        allow_prefix_passes: (config ``reward_model.allow_prefix_passes``) encoders only: if
            False, ``positions=True`` raises instead of running one pass per prefix.
        terminator_id: encoders only, see :func:`prefix_scores_exact`.
        chunk_size: prefixes per forward in the encoder prefix path.

    Causal RM: ONE backbone forward with mask-derived position ids; the head is applied to
    the pooled hidden state (or to every hidden state when ``positions``). Encoder: the batch
    is compacted to right padding (so absolute positions and the CLS index match the
    unpadded sequence) and run through the model's own forward and pooling.
    """
    model = _unwrap(model)
    _check_nonempty(attention_mask)
    causal = is_causal_rm(model)
    if not causal and positions and not allow_prefix_passes:
        raise ValueError(
            f"{type(model).__name__} is a bidirectional reward model: per-position (td) scores "
            "need one forward per prefix. Set reward_model.allow_prefix_passes=true to pay "
            "that cost, or use a causal (decoder) reward model."
        )
    with torch.no_grad():
        if causal:
            return _score_causal(model, input_ids, attention_mask, positions, attention)
        return _score_encoder(
            model,
            input_ids,
            attention_mask,
            positions,
            attention,
            prefix_start,
            terminator_id,
            chunk_size,
        )


def _score_causal(model, input_ids, attention_mask, positions, attention) -> ScoreOutput:
    backbone, head = _causal_parts(model)
    pooled = last_real_index(attention_mask)
    ctx = (
        _capture_pooled_row(model, pooled, attention_mask, causal=True)
        if attention
        else contextlib.nullcontext()
    )
    with ctx as req:
        hidden = backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            use_cache=False,
        ).last_hidden_state  # [b, L, H]
    ar = torch.arange(input_ids.shape[0], device=input_ids.device)
    position_scores = None
    if positions:
        all_scores = head(hidden)[..., 0].float()  # [b, L]
        position_scores = torch.where(
            attention_mask.bool(), all_scores, torch.zeros_like(all_scores)
        )
        scores = position_scores[ar, pooled]
    else:
        scores = head(hidden[ar, pooled])[..., 0].float()
    return ScoreOutput(scores, position_scores, req.row if attention else None)


def _encoder_logits(model: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """[b] scores of right-padded sequences through the model's own forward and pooling."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    if logits.shape[-1] != 1:
        raise ValueError(
            f"{type(model).__name__} returns {logits.shape[-1]} logits; a reward model needs num_labels=1"
        )
    return logits[:, 0].float()


def _score_encoder(
    model, input_ids, attention_mask, positions, attention, prefix_start, terminator_id, chunk_size
) -> ScoreOutput:
    ids_c, mask_c, order = _compact(input_ids, attention_mask)
    pooled = torch.zeros(ids_c.shape[0], dtype=torch.long, device=ids_c.device)  # CLS
    ctx = (
        _capture_pooled_row(model, pooled, mask_c, causal=False)
        if attention
        else contextlib.nullcontext()
    )
    with ctx as req:
        scores = _encoder_logits(model, ids_c, mask_c)
    row = None
    if attention:
        row = torch.zeros_like(req.row).scatter_(1, order, req.row)
    position_scores = None
    if positions:
        start = first_real_index(attention_mask) if prefix_start is None else prefix_start
        position_scores = prefix_scores_exact(
            model,
            input_ids,
            attention_mask,
            start,
            terminator_id=terminator_id,
            chunk_size=chunk_size,
        )
    return ScoreOutput(scores, position_scores, row)


def prefix_scores_exact(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    start: Tensor,
    *,
    terminator_id: int | None = None,
    chunk_size: int = 64,
) -> Tensor:
    """Score every prefix as its own sequence: the exact (slow) path for encoder RMs.

    Returns [b, L] float32: ``[i, j]`` = score of the real tokens of row i up to position j,
    for every real j >= ``start[i]``; 0 elsewhere. Costs sum_i (#real positions >= start_i)
    sequence forwards, batched ``chunk_size`` at a time, announced with one warning.

    Re-termination: an encoder RM was trained on tokenizer output such as
    ``[CLS] text [SEP]``; the prefix text ``y<=t`` encodes as ``[CLS] y<=t [SEP]``. So when
    ``terminator_id`` is given and row i's last real token equals it, every shorter prefix
    gets that token appended (the prefix ending just before the terminator is then the full
    sequence: the terminator's own td reward is 0). Prefixes are token prefixes: a prefix
    that cuts a word is not re-tokenised. Works for causal models too (as a reference).
    """
    model = _unwrap(model)
    _check_nonempty(attention_mask)
    device = input_ids.device
    seqs: list[list[int]] = []
    where: list[tuple[int, int]] = []
    for i in range(input_ids.shape[0]):
        real_pos = attention_mask[i].bool().nonzero().flatten().tolist()
        toks = input_ids[i, real_pos].tolist()
        terminated = terminator_id is not None and toks[-1] == terminator_id
        for r, j in enumerate(real_pos):
            if j < int(start[i]):
                continue
            prefix = toks[: r + 1]
            if terminated and r < len(toks) - 1:
                prefix = prefix + [terminator_id]
            seqs.append(prefix)
            where.append((i, j))
    n_chunks = math.ceil(len(seqs) / chunk_size)
    warnings.warn(
        f"{type(model).__name__}: exact prefix scores cost {len(seqs)} extra sequence "
        f"forwards ({n_chunks} batches of <= {chunk_size}) instead of 1 pass",
        stacklevel=2,
    )
    out = torch.zeros(input_ids.shape, dtype=torch.float32, device=device)
    pad = 0 if getattr(model.config, "pad_token_id", None) is None else model.config.pad_token_id
    causal = is_causal_rm(model)
    with torch.no_grad():
        _score_chunks(model, seqs, where, out, pad, causal, chunk_size, input_ids.dtype)
    return out


def _score_chunks(model, seqs, where, out, pad, causal, chunk_size, dtype) -> None:
    device = out.device
    for c in range(0, len(seqs), chunk_size):
        chunk = seqs[c : c + chunk_size]
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=dtype, device=device)
        mask = torch.zeros((len(chunk), width), dtype=torch.long, device=device)
        for k, s in enumerate(chunk):
            ids[k, : len(s)] = torch.tensor(s, dtype=dtype)
            mask[k, : len(s)] = 1
        if causal:
            vals = _score_causal(model, ids, mask, positions=False, attention=False).scores
        else:
            vals = _encoder_logits(model, ids, mask)
        rows, cols = zip(*where[c : c + chunk_size])
        out[list(rows), list(cols)] = vals
