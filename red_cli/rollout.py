"""Generate responses and run the no-grad forwards of a rollout. No optimiser here.

Every forward over a left-padded [query | response] sequence passes position ids computed
from the attention mask, so the logprobs are those of the distribution `generate` sampled
from (HF's generate does the same for left-padded prompts).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn

from red_cli.rlhf.masking import truncate_after_eos
from red_cli.rlhf.ppo import entropy_from_logits, gather_logprobs
from red_cli.scoring import position_ids_from_mask


@dataclass
class Rollout:
    """One rank's share of an iteration. P: padded prompt length, T: response length."""

    prompts: list[str]
    responses: list[str]
    query_ids: torch.Tensor  # [b, P] left-padded
    query_mask: torch.Tensor  # [b, P] bool
    response_ids: torch.Tensor  # [b, T] padded after EOS
    response_mask: torch.Tensor  # [b, T] bool, True through EOS

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.query_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.query_mask, self.response_mask], dim=1)

    def without_padding(self) -> Rollout:
        """The same rows without the columns that are padding in every row.

        Prompts are left-padded and responses right-padded to the longest of the whole
        rollout; a micro batch of it usually needs fewer columns on both sides. Positions
        come from the mask, so the real tokens' logits and values do not change.
        """
        real_q = self.query_mask.any(0)
        p0 = int(real_q.int().argmax()) if bool(real_q.any()) else self.query_mask.shape[1]
        real_r = self.response_mask.any(0).nonzero()
        t1 = int(real_r.max()) + 1 if len(real_r) else 1
        return Rollout(self.prompts, self.responses, self.query_ids[:, p0:],
                       self.query_mask[:, p0:], self.response_ids[:, :t1],
                       self.response_mask[:, :t1])

    def select(self, idx: torch.Tensor) -> Rollout:
        ids = idx.tolist()
        return Rollout([self.prompts[i] for i in ids], [self.responses[i] for i in ids],
                       self.query_ids[idx], self.query_mask[idx], self.response_ids[idx],
                       self.response_mask[idx])


@torch.no_grad()
def generate(policy: nn.Module, tokenizer, prompts: list[str], query_ids: torch.Tensor,
             query_mask: torch.Tensor, *, max_new_tokens: int, temperature: float, top_k: int,
             top_p: float) -> Rollout:
    was_training = policy.training
    policy.eval()
    out = policy.generate(
        input_ids=query_ids, attention_mask=query_mask.long(), do_sample=True,
        temperature=temperature, top_k=top_k or None, top_p=top_p, max_new_tokens=max_new_tokens,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    policy.train(was_training)
    response_ids, response_mask = truncate_after_eos(
        out[:, query_ids.shape[1]:], tokenizer.eos_token_id, tokenizer.pad_token_id
    )
    responses = tokenizer.batch_decode(response_ids.masked_fill(~response_mask, tokenizer.pad_token_id),
                                       skip_special_tokens=True)
    return Rollout(list(prompts), responses, query_ids, query_mask, response_ids, response_mask)


def response_logits(policy: nn.Module, rollout: Rollout, temperature: float) -> torch.Tensor:
    """Logits [b, T, V] that predicted each response token, divided by the sampling temperature.

    Only the last T + 1 positions go through the LM head (`logits_to_keep`): the prompt
    positions' logits were never used, and skipping them drops a [b, L, V] buffer forward
    and backward (memory; no measurable time on CPU: docs/PERFORMANCE.md).
    """
    mask = rollout.attention_mask
    T = rollout.response_ids.shape[1]
    kwargs = {"logits_to_keep": T + 1} if accepts_logits_to_keep(policy) else {}
    logits = policy(input_ids=rollout.input_ids, attention_mask=mask.long(),
                    position_ids=position_ids_from_mask(mask), use_cache=False, **kwargs).logits
    # Position L - T - 1 (the last prompt token) predicts response token 0; the last
    # position predicts nothing.
    logits = logits[:, -(T + 1):-1].float()
    return logits if temperature == 1.0 else logits / temperature


def accepts_logits_to_keep(model: nn.Module) -> bool:
    """Whether the causal LM's forward can skip the LM head on positions we never read."""
    inner = model
    # DeepSpeed engine / AdaptersDisabled -> (peft model ->) HF model
    while isinstance(getattr(inner, "module", None), nn.Module):
        inner = inner.module
    get_base = getattr(inner, "get_base_model", None)
    target = get_base() if callable(get_base) else inner
    return "logits_to_keep" in inspect.signature(target.forward).parameters


def response_values(critic: nn.Module, rollout: Rollout) -> torch.Tensor:
    """V(state before response token t), [b, T]."""
    values = critic(rollout.input_ids, rollout.attention_mask.long())
    start = rollout.query_ids.shape[1] - 1
    return values[:, start:start + rollout.response_ids.shape[1]]


@torch.no_grad()
def logprobs_of(policy: nn.Module, rollout: Rollout, temperature: float, micro_batch: int,
                with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logprobs (and entropies) of the sampled tokens, [b, T], in micro batches (0 on padding)."""
    lps, ents = [], []
    T = rollout.response_ids.shape[1]
    for part in _micro_batches(rollout, micro_batch):
        logits = response_logits(policy, part, temperature)
        lps.append(_pad_to(gather_logprobs(logits, part.response_ids), T))
        if with_entropy:
            ents.append(_pad_to(entropy_from_logits(logits), T))
    return torch.cat(lps), (torch.cat(ents) if with_entropy else None)


@torch.no_grad()
def values_of(critic: nn.Module, rollout: Rollout, micro_batch: int) -> torch.Tensor:
    """V(state before response token t), [b, T], in micro batches (0 on padding)."""
    T = rollout.response_ids.shape[1]
    return torch.cat([_pad_to(response_values(critic, part), T)
                      for part in _micro_batches(rollout, micro_batch)])


def _micro_batches(rollout: Rollout, micro_batch: int):
    n = len(rollout.prompts)
    for start in range(0, n, micro_batch):
        yield rollout.select(torch.arange(start, min(start + micro_batch, n))).without_padding()


def _pad_to(x: torch.Tensor, T: int) -> torch.Tensor:
    """[b, T'] -> [b, T], zeros on the right (response columns dropped as all-padding)."""
    return torch.nn.functional.pad(x, (0, T - x.shape[1])) if x.shape[1] < T else x
