"""Map reward-model tokens onto policy tokens by character offsets.

Notation: b batch, L RM sequence length, T policy response length (padded).

The reward model reads ``template.format(prompt=..., response=...)`` (default
``"{prompt}{response}"``), tokenised by ITS tokenizer; the response's character span inside
that text is tracked. Every RM token k gets a target policy response token ``to_policy[k]``:

- a token whose last character lies inside the response goes to the policy token that
  contains that character (characters no policy token covers, e.g. spaces a WordPiece
  tokenizer leaves out, belong to the next covered character's token, or the previous one
  at the very end);
- a token entirely before the response (template, prompt, BOS/CLS) is dropped (-1);
- a token after the response as the RM sees it goes to the LAST policy response token (the
  policy's EOS if it has one): one whose last character lies past the response (a template
  suffix), or a zero-width one (an EOS/SEP the RM tokenizer appends) past the last response
  character any RM token covers, so trailing whitespace the RM drops does not hold it back.

Offsets are first normalised (:func:`untrim_offsets`) so that each token's span is what its
bytes hold: a multi-byte character split across byte-level tokens belongs to the token holding
its LAST byte (a token that also holds something before it, e.g. the space of " 😀" split as
"ĠðŁ" + "ĺĢ", keeps only that); a whitespace-only token that ``trim_offsets`` reported as
zero-width gets its whitespace back; the same tokenizer thus maps every token to itself.
Tokens still zero-width (specials the tokenizer adds, offsets ``(0, 0)``) sit at the cursor
``max(s, end of the previous tokens)``: the first token of the text is "before"; a cursor at
or past the RM-covered end of the response is "after"; otherwise the character left of the
cursor decides. Targets never decrease along the RM sequence, so summing RM-token
rewards into policy tokens (:func:`to_policy_tokens`) preserves the total over the RM
response region exactly (up to float addition order), and reading prefix values at the last
RM token of each policy token (:func:`to_policy_values`) telescopes to the same thing.

Policy tokens with no text (EOS, other specials) have empty spans: they receive only the
"after" tokens when they are last. Policy spans come from re-encoding the response text with
the policy tokenizer (offsets, normalised as above, when the ids match the generated ids
exactly), else from incremental decoding (the decoded length after each token, a trailing
partial character, decoded as U+FFFD, left to the token that completes it); both give a
split character to the token holding its last byte and a space to the token holding it.

Identical tokenizers with the plain template take :func:`identity_rm_batch`: the RM reads the
policy ids as they are and the mapping is the identity (no text round trip).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from red_cli.reward.scoring import ScoreOutput

DEFAULT_TEMPLATE = "{prompt}{response}"


@dataclass
class RMBatch:
    """A reward-model batch plus its map onto policy response tokens.

    input_ids: [b, L] RM token ids (padding with the RM tokenizer's pad id).
    attention_mask: [b, L] long, 1 on real tokens.
    response_mask: [b, L] bool, True on the RM response region: from the first token whose
        last character is in the response through the last real token (== to_policy >= 0).
    prompt_last_index: [b] long, index of the last RM token before the region, where R(x)
        is read (td/prompt_baseline); -1 if the RM sees no token before the response.
    to_policy: [b, L] long, policy response token index (0..T-1) each RM token maps to,
        -1 if dropped (before the response, or padding).
    policy_lengths: [b] long, number of real policy response tokens per row.
    terminator_id: the special token the RM tokenizer appends at the end of a text (SEP/EOS),
        or None; pass it to ``score_batch`` so an encoder RM's prefixes are re-terminated.
    """

    input_ids: Tensor
    attention_mask: Tensor
    response_mask: Tensor
    prompt_last_index: Tensor
    to_policy: Tensor
    policy_lengths: Tensor
    terminator_id: int | None = None


class PolicyScores(NamedTuple):
    """Reward-model outputs expressed on policy response tokens (input of redistribution).

    scores: [b] r_C = R(x, y), the sequence score.
    prompt_scores: [b] or None, R(x) (td only; 0 where prompt_last_index is -1).
    prefix_scores: [b, T] or None, R(x, y<=t) for policy token t (td); 0 past the response.
    attention: [b, T] or None, pooled-token attention mass on each policy response token
        (abc), summed over the RM tokens mapped to it; NOT renormalised.
    """

    scores: Tensor
    prompt_scores: Tensor | None
    prefix_scores: Tensor | None
    attention: Tensor | None


# --------------------------------------------------------------------------- text & spans


def render(template: str, prompt: str, response: str) -> tuple[str, int, int]:
    """``template.format(prompt=, response=)`` and the response's [start, end) char span."""
    parts: list[str] = []
    pos = 0
    span: tuple[int, int] | None = None
    for literal, field, spec, conversion in string.Formatter().parse(template):
        parts.append(literal)
        pos += len(literal)
        if field is None:
            continue
        if spec or conversion or field not in ("prompt", "response"):
            raise ValueError(
                f"reward_model.template={template!r}: unsupported field {{{field}}}; "
                "valid fields are {prompt} and {response}, without format specs"
            )
        if field == "response":
            if span is not None:
                raise ValueError(f"reward_model.template={template!r}: {{response}} appears twice")
            span = (pos, pos + len(response))
        value = prompt if field == "prompt" else response
        parts.append(value)
        pos += len(value)
    if span is None:
        raise ValueError(f"reward_model.template={template!r} must contain {{response}}")
    return "".join(parts), span[0], span[1]


def policy_token_spans(response: str, ids: list[int], tokenizer) -> list[tuple[int, int]]:
    """[start, end) char span in ``response`` of each policy token id.

    ``response`` must be ``tokenizer.decode(ids, skip_special_tokens=True)``. Trailing
    special tokens (EOS) get the empty span at the end of the text.
    """
    special = set(tokenizer.all_special_ids)
    n_core = len(ids)
    while n_core > 0 and ids[n_core - 1] in special:
        n_core -= 1
    core = list(ids[:n_core])
    tail = [(len(response), len(response))] * (len(ids) - n_core)
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(response, add_special_tokens=False, return_offsets_mapping=True)
        if enc["input_ids"] == core:
            return untrim_offsets([(int(s), int(e)) for s, e in enc["offset_mapping"]]) + tail
    if tokenizer.decode(core, skip_special_tokens=True) != response:
        raise ValueError(
            "responses[i] must equal policy_tokenizer.decode(policy_response_ids[i], "
            "skip_special_tokens=True) for the character alignment"
        )
    spans: list[tuple[int, int]] = []
    prev = 0
    for k in range(n_core):
        # A prefix ending inside a multi-byte character decodes with a trailing U+FFFD.
        text = tokenizer.decode(core[: k + 1], skip_special_tokens=True).rstrip("\ufffd")
        end = min(max(len(text), prev), len(response))
        spans.append((prev, end))
        prev = end
    return spans + tail


def untrim_offsets(offsets: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Make fast-tokenizer offsets say which characters each token's bytes hold.

    - A multi-byte character split across consecutive byte-level tokens is reported by both;
      it belongs to the token holding its LAST byte (that token completes it). A token that
      shares its end with the next one therefore ends where the next begins, when it holds
      something before that (" 😀" as "ĠðŁ" + "ĺĢ": "ĠðŁ" keeps only the space). A token
      holding nothing but leading bytes keeps its span; the next token wins the overlap.
    - Whitespace that ``trim_offsets`` took away is given back: a zero-width token that follows
      a gap (byte-level BPE reports a lone "Ġ" as ``(s, s)``, and "ĠðŁ" as ``(s+1, s+2)``)
      spans the gap instead. Specials the tokenizer adds report ``(0, 0)``, behind the
      previous end, so they stay zero-width."""
    out: list[tuple[int, int]] = []
    prev_end = 0
    for k, (s, e) in enumerate(offsets):
        lo = min(s, prev_end)  # where its bytes start: trimmed whitespace included
        if k + 1 < len(offsets):
            ns, ne = offsets[k + 1]
            if ne > ns and s <= ns < e and ns > lo:  # next token completes our last char
                s, e = lo, ns
        if s == e and s > prev_end:
            s = prev_end
        out.append((s, e))
        prev_end = max(prev_end, e)
    return out


def _char_owner(spans: list[tuple[int, int]], n_chars: int) -> list[int]:
    """Policy token index owning each response character (later tokens win overlaps)."""
    owner = [-1] * n_chars
    for k, (s, e) in enumerate(spans):
        for c in range(max(s, 0), min(e, n_chars)):
            owner[c] = k
    nxt = -1
    for c in range(n_chars - 1, -1, -1):  # uncovered char -> next covered char's token
        if owner[c] < 0:
            owner[c] = nxt
        nxt = owner[c]
    prv = len(spans) - 1
    for c in range(n_chars):  # trailing uncovered chars -> previous token
        if owner[c] < 0:
            owner[c] = prv
        prv = owner[c]
    return owner


def rm_token_targets(
    offsets: list[tuple[int, int]], start: int, end: int, owner: list[int], n_policy: int
) -> list[int]:
    """Policy token index (or -1) for each RM token, from RM char offsets in the rendered
    text, the response span [start, end), and the response chars' policy owners."""
    last = n_policy - 1 if n_policy > 0 else -1
    # The response ends, as the RM sees it, after the last response character an RM token
    # covers: trailing whitespace it drops (WordPiece) must not keep an appended [SEP]/EOS
    # "inside" the response, where it would land on the last word instead of the last token.
    rm_end = start
    for s, e in offsets:
        if e > s and s < end and e > start:
            rm_end = max(rm_end, min(e, end))
    targets: list[int] = []
    prev_end = 0
    for k, (s, e) in enumerate(offsets):
        if e > s:
            c = e - 1
            if c >= end:
                targets.append(last)
            elif c < start:
                targets.append(-1)
            else:
                targets.append(owner[c - start])
        else:
            cursor = max(s, prev_end)
            if k == 0 or (cursor <= start and cursor < rm_end):
                targets.append(-1)
            elif cursor >= rm_end:
                targets.append(last)
            else:
                targets.append(owner[cursor - 1 - start])
        prev_end = max(prev_end, e)
    return targets


def appended_special_id(tokenizer) -> int | None:
    """The special token the tokenizer appends after a text (BERT's SEP, an EOS template),
    or None (GPT-2, LLaMA: nothing appended)."""
    enc = tokenizer("a", return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    if ids and ids[-1] in set(tokenizer.all_special_ids) and offsets[-1][0] == offsets[-1][1]:
        return int(ids[-1])
    return None


# --------------------------------------------------------------------------- batches


def build_rm_batch(
    prompts: list[str],
    responses: list[str],
    policy_response_ids: list[list[int]],
    policy_tokenizer,
    rm_tokenizer,
    template: str = DEFAULT_TEMPLATE,
    max_length: int = 1024,
    padding_side: str = "left",
) -> RMBatch:
    """Tokenise ``template.format(prompt, response)`` with the RM's fast tokenizer and map
    every RM token onto the policy response tokens (module docstring).

    ``responses[i]`` is the decoded policy response (skip_special_tokens=True) and
    ``policy_response_ids[i]`` its real token ids (through EOS, no padding).
    Longer than ``max_length``: the PROMPT is truncated from the left (leading zero-width
    specials such as BOS/CLS are kept, the response region is always kept whole); a region
    that alone does not fit raises (raise ``reward_model.max_length``).
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side={padding_side!r}; valid: 'left', 'right'")
    if not getattr(rm_tokenizer, "is_fast", False):
        raise ValueError("the reward model's tokenizer must be a fast tokenizer (offset mapping)")
    if not len(prompts) == len(responses) == len(policy_response_ids):
        raise ValueError("prompts, responses and policy_response_ids must have the same length")
    rendered = [render(template, p, r) for p, r in zip(prompts, responses)]
    enc = rm_tokenizer(
        [text for text, _, _ in rendered], return_offsets_mapping=True, add_special_tokens=True
    )
    rows_ids: list[list[int]] = []
    rows_tgt: list[list[int]] = []
    for i, (_text, start, end) in enumerate(rendered):
        # Spans are relative to the response text; owner[c] is the policy token of its char c.
        spans = policy_token_spans(responses[i], list(policy_response_ids[i]), policy_tokenizer)
        owner = _char_owner(spans, end - start)
        ids = list(enc["input_ids"][i])
        offsets = untrim_offsets([(int(s), int(e)) for s, e in enc["offset_mapping"][i]])
        tgt = rm_token_targets(offsets, start, end, owner, len(spans))
        ids, tgt = _truncate_left(ids, tgt, offsets, max_length)
        rows_ids.append(ids)
        rows_tgt.append(tgt)

    b, L = len(rows_ids), max(len(r) for r in rows_ids)
    pad = rm_tokenizer.pad_token_id
    if pad is None:
        pad = rm_tokenizer.eos_token_id if rm_tokenizer.eos_token_id is not None else 0
    input_ids = torch.full((b, L), pad, dtype=torch.long)
    attention_mask = torch.zeros((b, L), dtype=torch.long)
    to_policy = torch.full((b, L), -1, dtype=torch.long)
    prompt_last = torch.full((b,), -1, dtype=torch.long)
    for i, (ids, tgt) in enumerate(zip(rows_ids, rows_tgt)):
        off = L - len(ids) if padding_side == "left" else 0
        input_ids[i, off : off + len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[i, off : off + len(ids)] = 1
        to_policy[i, off : off + len(ids)] = torch.tensor(tgt, dtype=torch.long)
        first = next((k for k, t in enumerate(tgt) if t >= 0), len(tgt))
        prompt_last[i] = off + first - 1 if first > 0 else -1
    return RMBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        response_mask=to_policy >= 0,
        prompt_last_index=prompt_last,
        to_policy=to_policy,
        policy_lengths=torch.tensor([len(p) for p in policy_response_ids], dtype=torch.long),
        terminator_id=appended_special_id(rm_tokenizer),
    )


def _truncate_left(
    ids: list[int], tgt: list[int], offsets: list[tuple[int, int]], max_length: int
) -> tuple[list[int], list[int]]:
    if len(ids) <= max_length:
        return ids, tgt
    first = next((k for k, t in enumerate(tgt) if t >= 0), len(tgt))
    lead = 0
    while lead < first and offsets[lead][0] == offsets[lead][1]:
        lead += 1
    if lead + len(ids) - first > max_length:
        raise ValueError(
            f"the reward model's response region is {len(ids) - first} tokens (+{lead} special), "
            f"longer than reward_model.max_length={max_length}; raise it"
        )
    keep = len(ids) - (max_length - lead)
    return ids[:lead] + ids[keep:], tgt[:lead] + tgt[keep:]


def identity_rm_batch(
    query_ids: Tensor, query_mask: Tensor, response_ids: Tensor, response_mask: Tensor,
    unread_id: int | None = None,
) -> RMBatch:
    """Same-tokenizer fast path: the RM reads ``[query | response]`` ids as generated.

    query_ids, query_mask: [b, Lq] (left-padded prompts); response_ids, response_mask:
    [b, T] (response_mask True through EOS). Padding inside the row is fine: the scorer
    takes positions and the pooled index from the attention mask.

    ``unread_id``: a response token the RM does not read although the policy emitted it (a
    sampled pad that ended the response, as the text path drops it with the specials): it is
    masked out of the RM's input, so the score is that of the text before it (the prompt
    alone for a response that is only that token), and its policy token takes that value.
    """
    b, lq = query_ids.shape
    t = response_ids.shape[1]
    qmask, rmask = query_mask.long(), response_mask.long()
    if unread_id is not None:
        rmask = rmask * (response_ids != unread_id).long()
    ar = torch.arange(t, device=response_ids.device).expand(b, t)
    to_policy = torch.cat(
        [torch.full_like(query_ids, -1, dtype=torch.long), torch.where(rmask.bool(), ar, -1)], dim=1
    )
    idx = torch.arange(lq, device=query_ids.device)
    has_query = qmask.bool().any(-1)
    prompt_last = torch.where(has_query, (idx * qmask).argmax(-1), -1)
    return RMBatch(
        input_ids=torch.cat([query_ids, response_ids], dim=1),
        attention_mask=torch.cat([qmask, rmask], dim=1),
        response_mask=to_policy >= 0,
        prompt_last_index=prompt_last,
        to_policy=to_policy,
        policy_lengths=response_mask.long().sum(-1),
        terminator_id=None,
    )


def same_tokenizer(a, b) -> bool:
    """True if two tokenizers encode identically (same backend definition or same vocab)."""
    if a is b:
        return True
    ba, bb = getattr(a, "backend_tokenizer", None), getattr(b, "backend_tokenizer", None)
    if ba is not None and bb is not None:
        return ba.to_str() == bb.to_str()
    return type(a) is type(b) and a.get_vocab() == b.get_vocab()


def use_identity(policy_tokenizer, rm_tokenizer, template: str = DEFAULT_TEMPLATE) -> bool:
    """Whether the identity fast path applies (decide once at setup)."""
    return template == DEFAULT_TEMPLATE and same_tokenizer(policy_tokenizer, rm_tokenizer)


# --------------------------------------------------------------------------- projections


def _scatter_index(rm_batch: RMBatch, t: int) -> Tensor:
    tp = rm_batch.to_policy
    if bool((tp >= t).any()):
        raise ValueError(f"RM tokens map to policy index >= T={t}; T is too small for this batch")
    return torch.where(tp >= 0, tp, t)


def to_policy_tokens(rm_rewards: Tensor, rm_batch: RMBatch, t: int) -> Tensor:
    """Sum per-RM-token quantities into policy tokens: [b, L] -> [b, T].

    ``out[i, to_policy[i, k]] += rm_rewards[i, k]`` over the response region; tokens outside
    it are ignored. ``out.sum(-1) == (rm_rewards * response_mask).sum(-1)``.
    """
    b = rm_rewards.shape[0]
    out = torch.zeros(b, t + 1, dtype=rm_rewards.dtype, device=rm_rewards.device)
    region = torch.where(rm_batch.response_mask, rm_rewards, torch.zeros_like(rm_rewards))
    out.scatter_add_(1, _scatter_index(rm_batch, t), region)
    return out[:, :t]


def to_policy_values(rm_values: Tensor, rm_batch: RMBatch, t: int) -> Tensor:
    """Read per-position values (prefix scores) at policy tokens: [b, L] -> [b, T].

    Policy token t takes the value at the LAST RM token mapped to it; a policy token no RM
    token maps to repeats the previous one (the value at ``prompt_last_index`` before the
    first), so time differences of the result equal :func:`to_policy_tokens` of the RM-token
    differences. 0 past ``policy_lengths``.
    """
    b, length = rm_values.shape
    k = torch.arange(length, device=rm_values.device).expand(b, length)
    last = torch.full((b, t + 1), -1, dtype=torch.long, device=rm_values.device)
    last = last.scatter_reduce(
        1, _scatter_index(rm_batch, t), torch.where(rm_batch.response_mask, k, -1), "amax"
    )
    last = last[:, :t].cummax(dim=1).values
    pli = rm_batch.prompt_last_index
    prompt = torch.where(pli >= 0, rm_values.gather(1, pli.clamp(min=0)[:, None])[:, 0], 0.0)
    vals = torch.where(last >= 0, rm_values.gather(1, last.clamp(min=0)), prompt[:, None])
    valid = torch.arange(t, device=rm_values.device) < rm_batch.policy_lengths[:, None]
    return torch.where(valid, vals, torch.zeros_like(vals))


def project_to_policy(out: ScoreOutput, rm_batch: RMBatch, t: int) -> PolicyScores:
    """Express a :func:`red_cli.reward.scoring.score_batch` result on policy response tokens."""
    prompt_scores = prefix_scores = attention = None
    if out.position_scores is not None:
        pli = rm_batch.prompt_last_index
        read = out.position_scores.gather(1, pli.clamp(min=0)[:, None])[:, 0]
        prompt_scores = torch.where(pli >= 0, read, torch.zeros_like(read))
        prefix_scores = to_policy_values(out.position_scores, rm_batch, t)
    if out.attention_row is not None:
        attention = to_policy_tokens(out.attention_row, rm_batch, t)
    return PolicyScores(out.scores, prompt_scores, prefix_scores, attention)
