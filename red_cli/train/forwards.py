"""The forwards of PPO over a rollout: logits of the response tokens, logprobs, values.

Every forward over a left-padded [query | response] sequence passes position ids computed
from the attention mask, so the logprobs are those of the distribution the generator sampled
from (HF's `generate` numbers left-padded prompts the same way). The old-logprob forward,
not the generator, is the source of truth for PPO's ratios.
"""

from __future__ import annotations

import torch
from torch import nn

from red_cli.generation.rollout import Rollout
from red_cli.models.anatomy import accepts_logits_to_keep
from red_cli.rlhf.masking import position_ids_from_mask
from red_cli.rlhf.ppo import gather_logprobs


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


def response_values(critic: nn.Module, rollout: Rollout) -> torch.Tensor:
    """V(state before response token t), [b, T]."""
    values = critic(rollout.input_ids, rollout.attention_mask.long())
    start = rollout.query_ids.shape[1] - 1
    return values[:, start:start + rollout.response_ids.shape[1]]


@torch.no_grad()
def logprobs_of(policy: nn.Module, rollout: Rollout, temperature: float,
                micro_batch: int) -> torch.Tensor:
    """Logprobs of the sampled tokens, [b, T], in micro batches (0 on padding)."""
    T = rollout.response_ids.shape[1]
    return torch.cat([_pad_to(gather_logprobs(response_logits(policy, part, temperature),
                                              part.response_ids), T)
                      for part in _micro_batches(rollout, micro_batch)])


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
