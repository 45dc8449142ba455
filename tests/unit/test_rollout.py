"""The logprobs the trainer computes are those of the distribution `generate` sampled from."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from red_cli.data import left_pad
from red_cli.rlhf.masking import truncate_after_eos
from red_cli.rollout import Rollout, logprobs_of


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
    got, _ = logprobs_of(model, traj, temperature, micro_batch=2)
    torch.testing.assert_close(got[rmask], expected[rmask], atol=1e-4, rtol=1e-4)
