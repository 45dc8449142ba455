"""hf: transformers' own `generate` (dynamic KV cache), the reference backend."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from red_cli.generation.rollout import Rollout, from_samples, sampling_mode
from red_cli.generation.spec import Backend, Sampling


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
        with sampling_mode(model):
            out = model.generate(
                input_ids=query_ids, attention_mask=query_mask.long(), do_sample=True,
                temperature=s.temperature, top_k=s.top_k or None, top_p=s.top_p,
                max_new_tokens=s.max_new_tokens, eos_token_id=eos[0] if len(eos) == 1 else eos,
                pad_token_id=tok.pad_token_id,
            )
        return from_samples(tok, prompts, query_ids, query_mask, out[:, query_ids.shape[1]:], eos)


BACKEND = Backend(name="hf", knobs=HFConfig, build=lambda knobs, tok, s: HFGenerator(tok, s),
                  summary="transformers' generate with its dynamic KV cache")
