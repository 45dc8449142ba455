"""hf: transformers' own `generate` (dynamic KV cache), the reference backend."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from red_cli.generation.rollout import Rollout
from red_cli.generation.spec import Backend, Sampling
from red_cli.rlhf.masking import truncate_after_eos


@dataclass
class HFConfig:
    """No knobs: sampling settings come from ``ppo`` (training) or ``sampling`` (eval)."""


class HFGenerator:
    name = "hf"

    def __init__(self, tokenizer, sampling: Sampling):
        self.tokenizer = tokenizer
        self.sampling = sampling

    def describe(self, device: torch.device) -> str:
        return "hf (transformers generate, dynamic KV cache)"

    @torch.no_grad()
    def generate(self, model: nn.Module, prompts: list[str], query_ids: Tensor,
                 query_mask: Tensor) -> Rollout:
        tok, s = self.tokenizer, self.sampling
        eos = list(s.eos_token_ids) or [tok.eos_token_id]
        was_training = model.training
        model.eval()
        out = model.generate(
            input_ids=query_ids, attention_mask=query_mask.long(), do_sample=True,
            temperature=s.temperature, top_k=s.top_k or None, top_p=s.top_p,
            max_new_tokens=s.max_new_tokens, eos_token_id=eos[0] if len(eos) == 1 else eos,
            pad_token_id=tok.pad_token_id,
        )
        model.train(was_training)
        response_ids, response_mask = truncate_after_eos(
            out[:, query_ids.shape[1]:], eos, tok.pad_token_id, keep_sampled_pad=True)
        responses = tok.batch_decode(response_ids.masked_fill(~response_mask, tok.pad_token_id),
                                     skip_special_tokens=True)
        return Rollout(list(prompts), responses, query_ids, query_mask, response_ids,
                       response_mask)


BACKEND = Backend(name="hf", knobs=HFConfig, build=lambda knobs, tok, s: HFGenerator(tok, s),
                  summary="transformers' generate with its dynamic KV cache")
