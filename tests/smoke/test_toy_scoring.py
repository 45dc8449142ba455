"""Scoring and alignment on the toy world's own reward models (issue #4's acceptance):
one-pass td prefix scores of the causal RM, the exact per-prefix path of the bidirectional
RM, and toy_xtok's cross-tokenizer rewards, each against a naive reference."""

from __future__ import annotations

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from red_cli.data import left_pad
from red_cli.reward import align
from red_cli.reward.scoring import score_batch
from red_cli.rlhf.redistribution import td

TEXTS = ["the acting was not good at all", "i loved the music", "plot was dull but the cast shone"]


def _load(path):
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    return model, AutoTokenizer.from_pretrained(path)


def _naive_prefix_scores(model, ids: list[int]) -> list[float]:
    """One unpadded forward per prefix with the model's own classifier: the reference."""
    with torch.no_grad():
        return [model(input_ids=torch.tensor([ids[: j + 1]])).logits[0, 0].item()
                for j in range(len(ids))]


def test_causal_toy_rm_one_pass_equals_per_prefix(tiny_toy):
    model, tok = _load(tiny_toy.reward_models["toy"])
    rows = [tok(t)["input_ids"] for t in TEXTS]
    ids, mask = left_pad(rows, tok.pad_token_id)
    out = score_batch(model, ids, mask.long(), positions=True, attention=False)
    for i, row in enumerate(rows):
        offset = ids.shape[1] - len(row)
        naive = _naive_prefix_scores(model, row)
        torch.testing.assert_close(out.position_scores[i, offset:], torch.tensor(naive),
                                   atol=1e-5, rtol=0)
        assert abs(out.scores[i].item() - naive[-1]) < 1e-5


def test_bidirectional_toy_rm_prefix_path_equals_per_prefix(tiny_toy):
    model, tok = _load(tiny_toy.reward_models["toy_bidir"])
    rows = [tok(t)["input_ids"] for t in TEXTS]
    ids, mask = left_pad(rows, tok.pad_token_id)
    start = torch.tensor([ids.shape[1] - len(r) for r in rows])
    out = score_batch(model, ids, mask.long(), positions=True, attention=False,
                      prefix_start=start)
    for i, row in enumerate(rows):
        naive = _naive_prefix_scores(model, row)
        torch.testing.assert_close(out.position_scores[i, start[i]:], torch.tensor(naive),
                                   atol=1e-5, rtol=0)


def test_xtok_rewards_keep_their_totals_on_policy_tokens(tiny_toy):
    model, rm_tok = _load(tiny_toy.reward_models["toy_xtok"])
    policy_tok = AutoTokenizer.from_pretrained(tiny_toy.policy)
    assert not align.same_tokenizer(policy_tok, rm_tok)
    prompts = ["the acting was", "i found the plot", "music"]
    responses = [" not good at all.", " unbelievably dull but fun.", " was lovely"]
    ids = [policy_tok(r, add_special_tokens=False)["input_ids"] + [policy_tok.eos_token_id]
           for r in responses]
    decoded = [policy_tok.decode(x, skip_special_tokens=True) for x in ids]
    batch = align.build_rm_batch(prompts, decoded, ids, policy_tok, rm_tok, max_length=64)
    T = max(len(x) for x in ids)

    # Any per-RM-token rewards keep their response-region totals on policy tokens.
    g = torch.Generator().manual_seed(0)
    rm_rewards = torch.randn(batch.input_ids.shape, generator=g, dtype=torch.float64)
    on_policy = align.to_policy_tokens(rm_rewards, batch, T)
    torch.testing.assert_close(on_policy.sum(-1), (rm_rewards * batch.response_mask).sum(-1))

    # td through the real RM: the policy-token rewards sum to r_C - R(x).
    out = score_batch(model, batch.input_ids, batch.attention_mask, positions=True,
                      attention=True, prefix_start=batch.prompt_last_index.clamp(min=0))
    pol = align.project_to_policy(out, batch, T)
    mask = torch.arange(T)[None, :] < torch.tensor([len(x) for x in ids])[:, None]
    rewards = td(pol.prefix_scores, pol.prompt_scores, mask)
    torch.testing.assert_close(rewards.sum(-1), pol.scores - pol.prompt_scores, atol=1e-5, rtol=0)
    torch.testing.assert_close(pol.attention.sum(-1),
                               (out.attention_row * batch.response_mask).sum(-1))
