"""The logprobs the trainer computes are those of the distribution `generate` sampled from."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from red_cli.data import left_pad
from red_cli.generation.rollout import Rollout
from red_cli.models.anatomy import accepts_logits_to_keep
from red_cli.rlhf.masking import truncate_after_eos
from red_cli.train.forwards import logprobs_of, response_logits


def test_old_logprobs_match_generation_scores():
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=64, n_embd=32, n_layer=2,
                                       n_head=2, bos_token_id=1, eos_token_id=2, pad_token_id=0))
    model.eval()
    # Ragged prompts: left padding must not shift positions.
    query, qmask = left_pad([[1, 5, 6, 7, 8, 9], [1, 11], [1, 12, 13]], pad_id=0)
    temperature = 0.7
    out = model.generate(input_ids=query, attention_mask=qmask.long(), do_sample=True,
                         temperature=temperature, top_k=None, top_p=1.0, max_new_tokens=8,
                         eos_token_id=2, pad_token_id=0, output_logits=True,
                         return_dict_in_generate=True)
    response, rmask = truncate_after_eos(out.sequences[:, query.shape[1]:], 2, 0)
    # What generate sampled from at each step: softmax(logits / temperature).
    logits = torch.stack(out.logits, dim=1)[:, : response.shape[1]] / temperature
    expected = torch.log_softmax(logits.float(), -1).gather(-1, response[..., None])[..., 0]

    traj = Rollout(["a", "b", "c"], ["", "", ""], query, qmask, response, rmask)
    got = logprobs_of(model, traj, temperature, micro_batch=2)
    torch.testing.assert_close(got[rmask], expected[rmask], atol=1e-4, rtol=1e-4)


class _NoTrim(torch.nn.Module):
    """A causal LM whose forward has no `logits_to_keep`: the full-logits path."""

    def __init__(self, model):
        super().__init__()
        self.inner = model

    def forward(self, input_ids, attention_mask, position_ids, use_cache):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                          position_ids=position_ids, use_cache=use_cache)


class _EngineLike(torch.nn.Module):
    """DeepSpeed's engine: forwards **kwargs to `.module`."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, **kwargs):
        return self.module(**kwargs)


def test_response_logits_trimmed_head_equals_full_logits():
    torch.manual_seed(1)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=40, n_positions=64, n_embd=32, n_layer=2,
                                       n_head=2, bos_token_id=1, eos_token_id=2, pad_token_id=0))
    model.eval()
    query, qmask = left_pad([[1, 5, 6, 7], [1, 11]], pad_id=0)
    response = torch.tensor([[8, 9, 2, 0, 0], [3, 4, 5, 6, 7]])
    traj = Rollout(["a", "b"], ["", ""], query, qmask, response, response != 0)
    assert accepts_logits_to_keep(_EngineLike(model))
    assert not accepts_logits_to_keep(_NoTrim(model))
    for temperature in (1.0, 0.5):
        trimmed = response_logits(_EngineLike(model), traj, temperature)
        full = response_logits(_NoTrim(model), traj, temperature)
        # One row of logits per real response token (3 + 5).
        assert trimmed.shape == full.shape == (8, 40)
        torch.testing.assert_close(trimmed, full, atol=1e-5, rtol=1e-5)
        # Plain loop: logits at position P - 1 + t predict response token t.
        ids = torch.cat([query, response], 1)
        mask = torch.cat([qmask, response != 0], 1)
        k = 0
        for i in range(2):
            real = mask[i].nonzero()[:, 0]
            out = model(input_ids=ids[i, real][None]).logits[0] / temperature
            n_prompt = int(qmask[i].sum())
            for t in range(int((response[i] != 0).sum())):
                torch.testing.assert_close(trimmed[k], out[n_prompt - 1 + t], atol=1e-4, rtol=1e-4)
                k += 1


def test_micro_batches_without_padding_columns_give_the_same_numbers():
    """logprobs_of / values_of drop columns that are padding in a whole micro batch; the
    real tokens' numbers must not change (a plain loop over rows, unpadded, is the twin)."""
    from red_cli.models import Critic
    from red_cli.train.forwards import values_of

    torch.manual_seed(2)
    config = GPT2Config(vocab_size=40, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = GPT2LMHeadModel(config).eval()
    critic = Critic(model.transformer, torch.nn.Linear(32, 1)).eval()
    # Rows 0-1 share short prompts and responses; rows 2-3 carry the long ones.
    query, qmask = left_pad([[1, 5], [1, 6, 7], [1, 5, 6, 7, 8, 9], [1, 11, 12, 13]], pad_id=0)
    lengths = torch.tensor([2, 1, 6, 4])
    response = torch.randint(3, 40, (4, 6))
    rmask = torch.arange(6)[None, :] < lengths[:, None]
    response = response.masked_fill(~rmask, 0)
    traj = Rollout(list("abcd"), [""] * 4, query, qmask, response, rmask)
    part = traj.select(torch.tensor([0, 1])).without_padding()
    assert part.query_ids.shape[1] == 3 and part.response_ids.shape[1] == 2
    with torch.no_grad():
        lp = logprobs_of(model, traj, 1.0, micro_batch=2)
        values = values_of(critic, traj, micro_batch=2)
        for i in range(4):
            q = query[i, qmask[i]]
            ids = torch.cat([q, response[i, : lengths[i]]])[None]
            logits = model(input_ids=ids).logits[0].log_softmax(-1)
            v = critic(ids, torch.ones_like(ids))[0]
            for t in range(int(lengths[i])):
                pos = len(q) - 1 + t
                torch.testing.assert_close(lp[i, t], logits[pos, response[i, t]], atol=1e-5, rtol=1e-5)
                torch.testing.assert_close(values[i, t], v[pos], atol=1e-5, rtol=1e-5)
    # The columns dropped from the first micro batch (rows 0-1 need 2 of 6) come back as 0.
    assert (lp[:2, 2:] == 0).all() and (values[:2, 2:] == 0).all()
