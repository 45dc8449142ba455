"""LoRA through peft: adapters on the policy (and the critic's backbone), the reference as the
policy with its adapters off, and the merged final policy."""

from __future__ import annotations

import copy
from pathlib import Path

from torch import nn

from red_cli.errors import ConfigError
from red_cli.models.critic import Critic
from red_cli.models.loading import freeze


def reference_from(policy: nn.Module) -> nn.Module:
    """The KL anchor: the policy with its adapters off (LoRA), else a frozen copy of it."""
    if is_lora(policy):
        return AdaptersDisabled(policy)
    return freeze(copy.deepcopy(policy))


def is_lora(model: nn.Module) -> bool:
    return getattr(model, "peft_config", None) is not None and hasattr(model, "disable_adapter")


class AdaptersDisabled(nn.Module):
    """The starting policy without a second copy of it: the LoRA policy's own forward with its
    adapters switched off. Only the adapters train, so this is exactly the SFT model.

    The policy sits at ``.module`` (as in a DeepSpeed engine), so helpers that look through
    wrappers for the causal LM find it.
    """

    def __init__(self, policy: nn.Module):
        super().__init__()
        self.module = policy

    def forward(self, *args, **kwargs):
        with self.module.disable_adapter():
            return self.module(*args, **kwargs)


def _lora_config(r: int, alpha: int, dropout: float, target_modules, task_type: str | None):
    from peft import LoraConfig

    targets = list(target_modules)
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, task_type=task_type,
                      # [] -> peft's table of defaults per architecture.
                      target_modules="all-linear" if targets == ["all-linear"] else (targets or None))


def add_lora(policy: nn.Module, r: int, alpha: int, dropout: float, target_modules,
             key: str = "policy.lora.target_modules") -> nn.Module:
    """The policy wrapped in LoRA adapters (a peft model): only the adapters train."""
    from peft import get_peft_model

    try:
        return get_peft_model(policy, _lora_config(r, alpha, dropout, target_modules, "CAUSAL_LM"))
    except ValueError as err:  # no such module, or no default for this architecture
        raise ConfigError(f"{key}={list(target_modules)}: {err}") from err


def add_critic_lora(critic: Critic, r: int, alpha: int, dropout: float, target_modules,
                    key: str = "policy.lora.target_modules") -> Critic:
    """LoRA adapters on the critic's backbone, in place; the value head stays fully trainable."""
    from peft import inject_adapter_in_model

    try:
        inject_adapter_in_model(_lora_config(r, alpha, dropout, target_modules, None), critic.backbone)
    except ValueError as err:
        raise ConfigError(f"{key}={list(target_modules)} (critic backbone): {err}") from err
    critic.head.requires_grad_(True)
    return critic


def merged_lora_policy(base: nn.Module, adapter_dir: str | Path) -> nn.Module:
    """``base`` (the starting policy) with the adapters saved in ``adapter_dir`` merged into
    its weights: a plain transformers model that `from_pretrained` users can load."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
