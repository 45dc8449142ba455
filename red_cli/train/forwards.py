"""The forwards of PPO over a rollout: logits of the response tokens, logprobs, values.

Every forward numbers each sequence's tokens from 0 as the generator did (HF's `generate`
numbers left-padded prompts by the attention mask), so the logprobs are those of the
distribution it sampled from. The old-logprob forward, not the generator, is the source of
truth for PPO's ratios.

A model that keeps packed sequences apart (``packs_rows``: transformers 5.x models with
their own attention masks) reads the rollout packed, several [prompt | response] sequences to
a row (``Rollout.packed``): no position is spent on padding. Any other model reads the padded
rows, with position ids from the mask.
"""

from __future__ import annotations

from collections.abc import Callable
from weakref import WeakKeyDictionary

import torch
from torch import nn

from red_cli.generation.rollout import Rollout
from red_cli.models.anatomy import accepts_logits_to_keep, causal_lm, unwrap
from red_cli.models.critic import Critic
from red_cli.rlhf.masking import position_ids_from_mask
from red_cli.rlhf.ppo import gather_logprobs


def response_logits(policy: nn.Module, rollout: Rollout, temperature: float) -> torch.Tensor:
    """Logits [n, V] that predicted the n real response tokens, in the order of
    ``response_mask.nonzero()``, divided by the sampling temperature.

    The LM head runs on those n positions only (`logits_to_keep`); padded rows keep the last
    T + 1 positions. Prompt positions' logits were never used, and skipping them drops a
    [b, L, V] buffer forward and backward.
    """
    mask = rollout.response_mask
    if packs_rows(policy):
        packed = rollout.packed()
        keep = torch.zeros(packed.input_ids.numel(), dtype=torch.bool, device=mask.device)
        keep[packed.predictors] = True
        logits = policy(input_ids=packed.input_ids, position_ids=packed.position_ids,
                        use_cache=False, logits_to_keep=keep.view_as(packed.input_ids)).logits
        # The head saw them in packed order.
        logits = logits[packed.predictors.argsort().argsort()]
    else:
        T = mask.shape[1]
        full = rollout.attention_mask
        kwargs = {"logits_to_keep": T + 1} if accepts_logits_to_keep(policy) else {}
        logits = policy(input_ids=rollout.input_ids, attention_mask=full.long(),
                        position_ids=position_ids_from_mask(full), use_cache=False,
                        **kwargs).logits
        # Position L - T - 1 (the last prompt token) predicts response token 0; the last
        # position predicts nothing.
        logits = logits[:, -(T + 1):-1][mask]
    logits = logits.float()
    return logits if temperature == 1.0 else logits / temperature


def response_values(critic: nn.Module, rollout: Rollout) -> torch.Tensor:
    """V(state before response token t), [b, T], 0 on padding."""
    mask = rollout.response_mask
    if packs_rows(critic):
        packed = rollout.packed()
        values = critic(packed.input_ids, None, position_ids=packed.position_ids)
        return per_token(values.flatten()[packed.predictors], mask)
    values = critic(rollout.input_ids, rollout.attention_mask.long())
    start = rollout.query_ids.shape[1] - 1
    return torch.where(mask, values[:, start:start + mask.shape[1]], 0.0)


def per_token(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[n] numbers of the real response tokens (``response_logits``' order) -> [b, T], 0 on
    padding. Differentiable."""
    return x.new_zeros(mask.shape).masked_scatter(mask, x)


@torch.no_grad()
def logprobs_of(policy: nn.Module, rollout: Rollout, temperature: float,
                micro_batch: int) -> torch.Tensor:
    """Logprobs of the sampled tokens, [b, T], in micro batches (0 on padding)."""
    T = rollout.response_ids.shape[1]
    return torch.cat([
        _pad_to(per_token(gather_logprobs(response_logits(policy, part, temperature),
                                          part.response_ids[part.response_mask]),
                          part.response_mask), T)
        for part in _micro_batches(rollout, micro_batch)])


@torch.no_grad()
def values_of(critic: nn.Module, rollout: Rollout, micro_batch: int) -> torch.Tensor:
    """V(state before response token t), [b, T], in micro batches (0 on padding)."""
    T = rollout.response_ids.shape[1]
    return torch.cat([_pad_to(response_values(critic, part), T)
                      for part in _micro_batches(rollout, micro_batch)])


# Per model: whether it keeps packed sequences apart (asked once).
_PACKS: WeakKeyDictionary = WeakKeyDictionary()


def packs_rows(model: nn.Module) -> bool:
    """Whether ``model`` (a causal LM or a ``Critic``, inside any wrappers) gives a sequence
    packed behind another (positions restarting at 0, no attention mask) the outputs it gives
    that sequence alone. Tried once per model on a 5-token row; a model that refuses the
    arguments (no `position_ids`, no tensor `logits_to_keep`) does not pack."""
    inner = unwrap(model)
    critic = isinstance(inner, Critic)
    if not critic:
        inner = causal_lm(model)
    if inner not in _PACKS:
        if critic:
            def run(ids, pos, keep):
                return inner(ids, None, position_ids=pos)[keep]
        else:
            def run(ids, pos, keep):
                return inner(input_ids=ids, position_ids=pos, use_cache=False,
                             logits_to_keep=keep).logits
        _PACKS[inner] = _keeps_sequences_apart(run, next(inner.parameters()).device)
    return _PACKS[inner]


@torch.no_grad()
def _keeps_sequences_apart(run: Callable, device: torch.device) -> bool:
    ids = torch.tensor([[3, 1, 4, 1, 5]], device=device)
    pos = torch.tensor([[0, 1, 0, 1, 2]], device=device)
    try:
        keep = torch.tensor([[False, False, True, True, True]], device=device)
        packed = run(ids, pos, keep).float()
        alone = run(ids[:, 2:], pos[:, 2:], keep[:, 2:]).float()
    except (TypeError, ValueError, RuntimeError, IndexError):
        return False
    # Equal but for rounding (bf16 included); attending across sequences moves them by far more.
    return packed.shape == alone.shape and bool(
        ((packed - alone).abs().max() <= 1e-2 * alone.abs().max()).item())


def _micro_batches(rollout: Rollout, micro_batch: int):
    n = len(rollout.prompts)
    for start in range(0, n, micro_batch):
        yield rollout.select(torch.arange(start, min(start + micro_batch, n))).without_padding()


def _pad_to(x: torch.Tensor, T: int) -> torch.Tensor:
    """[b, T'] -> [b, T], zeros on the right (response columns dropped as all-padding)."""
    return torch.nn.functional.pad(x, (0, T - x.shape[1])) if x.shape[1] < T else x
