"""What a generation backend is: how a rollout's responses are sampled.

Training, `red eval` and `red explain` build one :class:`Generator` at setup
(``red_cli.generation.build_generator``) and call it for every batch of prompts. A backend
only has to sample correctly: the old-logprob forward that follows, not the sampler, is the
source of truth for PPO's ratios, so a faster sampler (static KV cache, paged batching, an
inference server) plugs in without touching the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from red_cli.generation.rollout import Rollout


@dataclass(frozen=True)
class Sampling:
    """How responses are sampled (``ppo.*`` in training, ``sampling.*`` in `red eval`)."""

    max_new_tokens: int
    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k filter
    top_p: float = 1.0
    # Token ids that end a response (empty: the tokenizer's EOS); a chat model's generation
    # config often lists several (end of turn, end of text).
    eos_token_ids: tuple[int, ...] = ()


class Generator(Protocol):
    """Samples one response per prompt.

    ``generate`` gets the policy as a plain module holding its full weights (the caller
    gathers ZeRO-3 partitions first), the prompt texts and their left-padded ids [b, P] and
    mask [b, P] (bool) on the policy's device, and returns a :class:`Rollout` whose responses
    end at the first of ``Sampling.eos_token_ids`` or at a sampled pad token
    (``response_mask`` True through it: ``rlhf.masking.truncate_after_eos`` with
    ``keep_sampled_pad``, so no response is empty) and whose texts decode the response ids
    without special tokens. Randomness comes from torch's global generator, so
    the caller's seed makes the rollout repeatable.
    """

    name: str

    def generate(self, model: nn.Module, prompts: list[str], query_ids: Tensor,
                 query_mask: Tensor) -> Rollout: ...

    def describe(self, device: torch.device) -> str:
        """The backend and how it runs on ``device``, for start-up lines."""
        ...


@dataclass(frozen=True)
class Backend:
    """One generation backend: ``generation=<name>`` selects it, ``generation.<name>.*`` are
    its knobs, ``build(knobs, tokenizer, sampling)`` makes its Generator, and ``check(knobs)``
    lists (knob, value, what is allowed) for each invalid knob, for the start-up checks."""

    name: str
    knobs: type
    build: Callable[[Any, Any, Sampling], Generator]
    summary: str = ""
    check: Callable[[Any], list[tuple[str, Any, str]]] = lambda knobs: []
