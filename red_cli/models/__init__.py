"""The models of a PPO run, built from flat arguments.

policy (trained), reference (frozen copy of the starting policy, or with LoRA the policy with
its adapters off), critic (trained; a value head on a causal backbone) and reward model
(frozen scalar classifier). Paths are hub ids, local folders, or `toy:*` names of the
embedded task (``red_cli.toy.resolve_path``); all load through `from_pretrained`.

- ``loading``: tokenizers, policies, reward models (label weights folded into one head);
- ``anatomy``: where the head, backbone and attention modules are inside a model;
- ``critic``: the value model; ``lora``: adapters, the adapter-free reference, merging.
"""

from red_cli.models.critic import Critic, build_critic
from red_cli.models.loading import (
    DTYPES,
    FusedGELUTanh,
    disable_dropout,
    enable_checkpointing,
    eos_token_ids,
    first_non_finite_parameter,
    fold_label_weights,
    freeze,
    fuse_gelu,
    load_policy,
    load_reward_model,
    load_tokenizer,
    safetensors_only,
)
from red_cli.models.lora import (
    AdaptersDisabled,
    add_critic_lora,
    add_lora,
    is_lora,
    merged_lora_policy,
    reference_from,
)

__all__ = ["DTYPES", "AdaptersDisabled", "Critic", "add_critic_lora", "add_lora", "build_critic",
           "disable_dropout", "enable_checkpointing", "eos_token_ids", "first_non_finite_parameter",
           "fold_label_weights", "freeze", "FusedGELUTanh", "fuse_gelu", "is_lora",
           "load_policy", "load_reward_model", "load_tokenizer", "merged_lora_policy",
           "reference_from", "safetensors_only"]
