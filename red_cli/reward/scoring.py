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
  averaged over heads, recomputed for that one row while the model keeps its fast attention
  (``red_cli.reward.attention_row``).

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
import math
import warnings
from typing import NamedTuple

import torch
from torch import Tensor, nn

from red_cli.models.anatomy import causal_parts, is_causal_rm, unwrap
from red_cli.reward.attention_row import capture_pooled_row
from red_cli.rlhf.masking import first_true_index, last_true_index, position_ids_from_mask


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


def _check_nonempty(attention_mask: Tensor) -> None:
    if not bool(attention_mask.bool().any(-1).all()):
        raise ValueError("every row of attention_mask needs at least one real token")


def _compact(input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Move each row's real tokens to the front (right padding), keeping their order.
    Returns (ids, mask, order) with ``compact[:, j] = original[:, order[:, j]]``."""
    order = torch.argsort((~attention_mask.bool()).to(torch.int8), dim=1, stable=True)
    return input_ids.gather(1, order), attention_mask.gather(1, order), order

def attention_row_problem(model: nn.Module) -> str | None:
    """Why abc's attention row cannot be read from ``model`` (None if it can): one forward
    of two tokens through the same capture abc uses, run once at start-up."""
    model = unwrap(model)
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
    model = unwrap(model)
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
    backbone, head = causal_parts(model)
    pooled = last_true_index(attention_mask.bool())
    ctx = (
        capture_pooled_row(model, pooled, attention_mask, causal=True)
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
        capture_pooled_row(model, pooled, mask_c, causal=False)
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
        start = first_true_index(attention_mask.bool()) if prefix_start is None else prefix_start
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
    model = unwrap(model)
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
