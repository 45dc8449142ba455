"""The critic: a value head on a causal backbone, started from the reward model or the policy."""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from red_cli.models.anatomy import causal_parts
from red_cli.models.loading import disable_dropout, enable_checkpointing
from red_cli.rlhf.masking import position_ids_from_mask

log = logging.getLogger("red")


class Critic(nn.Module):
    """A value head on a causal backbone: one value per position, [b, L].

    Built from the reward model (the usual choice: its head already reads "how good is this
    prefix") or from the policy's backbone with a fresh head.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Values [b, L]. Position ids count the mask's real tokens unless given (packed rows:
        no mask, positions restarting with each sequence, ``Rollout.packed``)."""
        if position_ids is None:
            position_ids = position_ids_from_mask(attention_mask)
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            use_cache=False,
        ).last_hidden_state
        return self.head(hidden).squeeze(-1).float()


def build_critic(init: str, reward_model: nn.Module, policy: nn.Module, rm_is_causal: bool,
                 same_tokenizer: bool, gradient_checkpointing: bool = False,
                 role: str = "reward model") -> tuple[Critic, str]:
    """Return the critic and what it was initialised from (after any fallback).

    ``policy`` is the plain causal LM, before any adapters are added to it. ``reward_model``
    is the scorer the critic's values estimate (``role``: "reward model" or "cost model").
    """
    if init == "reward_model" and not (rm_is_causal and same_tokenizer):
        why = "bidirectional" if not rm_is_causal else "with another tokenizer"
        critic = "critic" if role == "reward model" else f"{role.split()[0]} critic"
        log.warning("ppo.critic_init=reward_model: the %s is %s, so it cannot read policy "
                    "prefixes as values; initialising the %s from the policy", role, why, critic)
        init = "policy"
    if init == "reward_model":
        critic = Critic(*causal_parts(copy.deepcopy(reward_model)))
    else:
        base = copy.deepcopy(policy.base_model)
        head = nn.Linear(policy.config.get_text_config().hidden_size, 1,
                         dtype=next(base.parameters()).dtype)
        # A zero head starts every value at 0, so early advantages are the plain returns.
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        critic = Critic(base, head)
    disable_dropout(critic)
    if gradient_checkpointing:
        enable_checkpointing(critic.backbone)
    critic.train()
    critic.requires_grad_(True)
    return critic, init
