"""A reward (or cost) model with its tokenizer and settings, loaded once for `red train`,
`red explain` and the `reward_model` judge and cost columns of `red eval`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from red_cli import models
from red_cli.toy import resolve_path


@dataclass
class RewardStack:
    """cfg: the ``reward_model`` config node (RewardModelConfig); model: the frozen scalar
    classifier on its device; tokenizer: its own tokenizer."""

    cfg: Any
    model: nn.Module
    tokenizer: Any


def load_reward_stack(rm_cfg: Any, toy_cfg: Any, device: Any,
                      key: str = "reward_model.path") -> RewardStack:
    """Load the reward model ``rm_cfg`` names (a hub id, local folder or `toy:*`), frozen;
    a cost model loads the same way from its own node (``key="cost_model.path"``)."""
    path = resolve_path(rm_cfg.path, toy_cfg)
    tokenizer = models.load_tokenizer(resolve_path(rm_cfg.tokenizer or path, toy_cfg),
                                      rm_cfg.trust_remote_code, key=key)
    model = models.load_reward_model(path, rm_cfg.dtype, rm_cfg.trust_remote_code, key=key,
                                     label_weights=rm_cfg.get("label_weights"),
                                     score_head=rm_cfg.get("score_head"))
    return RewardStack(rm_cfg, model.to(device), tokenizer)
