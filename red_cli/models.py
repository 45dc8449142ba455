"""Build the four models of a PPO run from flat arguments.

policy (trained), reference (frozen copy of the starting policy, or with LoRA the policy with
its adapters off), critic (trained; a value head on a causal backbone) and reward model
(frozen scalar classifier). Paths are hub ids,
local folders, or `toy:*` names of the embedded task; all load through `from_pretrained`.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
from torch import nn

from red_cli.checks import ConfigError, looks_local
from red_cli.scoring import position_ids_from_mask

log = logging.getLogger("red")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_path(path: str, toy_cfg=None) -> str:
    """A `toy:*` name becomes the cached toy artifact (built on first use); others pass through."""
    if path.startswith("toy:"):
        from red_cli.toy.build import resolve_toy_path
        from red_cli.toy.settings import ToyConfig

        return str(resolve_toy_path(path, toy_cfg if toy_cfg is not None else ToyConfig()))
    return path


def _check_exists(path: str, key: str) -> None:
    # A local-looking path that does not exist would otherwise become a hub lookup and a
    # network error deep inside huggingface_hub.
    if looks_local(path) and not Path(path).expanduser().exists():
        raise FileNotFoundError(f"{key}={path!r}: no such file or directory")


def load_tokenizer(path: str, trust_remote_code: bool = False, key: str = "policy.path"):
    from transformers import AutoTokenizer

    _check_exists(path, key)
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token_id is None:
        # Padding is always masked out, so any id serves; EOS is the usual choice (TRL).
        tok.pad_token = tok.eos_token
    if tok.eos_token_id is None:
        raise ValueError(f"{key}={path!r}: the tokenizer has no EOS token; responses could never end")
    return tok


def load_policy(path: str, dtype: str = "float32", trust_remote_code: bool = False,
                gradient_checkpointing: bool = False, key: str = "policy.path") -> nn.Module:
    from transformers import AutoModelForCausalLM

    _check_exists(path, key)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code, **safetensors_only(path)
    )
    disable_dropout(model)
    if gradient_checkpointing:
        enable_checkpointing(model)
    return model


def safetensors_only(path: str) -> dict:
    """`from_pretrained` arguments that load a local folder's safetensors and never its pickles.

    Hub ids keep transformers' own choice (safetensors when the repository has them), so a
    hub model published only as `.bin` still loads.
    """
    folder = Path(path).expanduser()
    if folder.is_dir() and any(folder.glob("*.safetensors")):
        return {"use_safetensors": True}
    return {}


def enable_checkpointing(model: nn.Module) -> None:
    """Recompute activations in the backward pass: less memory for about a third more compute.

    transformers checkpoints non-reentrantly and makes the embeddings' output require grad,
    so adapters behind frozen embeddings (LoRA) still get their gradients.
    """
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()
    model.config.use_cache = False


def load_reward_model(path: str, dtype: str = "float32", trust_remote_code: bool = False,
                      key: str = "reward_model.path",
                      label_weights: list[float] | None = None) -> nn.Module:
    """A frozen scalar classifier. ``label_weights`` turns a k-label classifier into one:
    score = sum_k w_k * logit_k (e.g. [-1, 1]: logit[positive] - logit[negative])."""
    from transformers import AutoModelForSequenceClassification

    _check_exists(path, key)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code, **safetensors_only(path)
    )
    if label_weights is not None:
        fold_label_weights(model, label_weights)
    elif model.config.num_labels != 1:
        raise ConfigError(
            f"{key}={path!r}: a reward model needs one scalar output (num_labels=1), "
            f"this one has {model.config.num_labels}; set reward_model.label_weights "
            f"(one weight per label, score = sum_k w_k * logit_k) to combine them"
        )
    freeze(model)
    return model


# Attribute names of a sequence classifier's output layer: decoders, then encoders.
_OUTPUT_LAYERS = ("score", "classifier")


def fold_label_weights(model: nn.Module, weights: list[float],
                       key: str = "reward_model.label_weights") -> nn.Module:
    """Replace the classifier's final Linear(H, k) by Linear(H, 1) computing sum_k w_k logit_k.

    weight = w @ W, bias = w @ b, so every reader of the head (sequence score, td prefix
    scores, abc attention) sees the combined score with no other change. In place.
    """
    name = next((n for n in _OUTPUT_LAYERS if isinstance(getattr(model, n, None), nn.Module)), None)
    owner, head = model, getattr(model, name) if name else None
    if head is not None and not isinstance(head, nn.Linear):
        # RoBERTa-style heads keep their output Linear at `classifier.out_proj`.
        owner, name, head = head, "out_proj", getattr(head, "out_proj", None)
    if not isinstance(head, nn.Linear):
        raise ConfigError(f"{key}: {type(model).__name__} has no output Linear to fold the weights "
                         f"into (looked at {', '.join(_OUTPUT_LAYERS)} and classifier.out_proj)")
    k = head.out_features
    if len(weights) != k:
        raise ConfigError(f"{key}={list(weights)}: the reward model has {k} labels, so {key} needs "
                         f"{k} weights (one per label, in label order); got {len(weights)}")
    w = torch.tensor(list(weights), dtype=torch.float64)
    folded = nn.Linear(head.in_features, 1, bias=head.bias is not None,
                       dtype=head.weight.dtype, device=head.weight.device)
    with torch.no_grad():
        folded.weight.copy_((w @ head.weight.double())[None, :])
        if head.bias is not None:
            folded.bias.copy_((w @ head.bias.double()).reshape(1))
    setattr(owner, name, folded)
    model.config.num_labels = 1
    return model


def disable_dropout(model: nn.Module) -> nn.Module:
    """PPO compares logprobs of the same tokens across forwards: dropout would make the
    ratio noisy from the first step (TRL and OpenRLHF switch it off too)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model


def reference_from(policy: nn.Module) -> nn.Module:
    """The KL anchor: the policy with its adapters off (LoRA), else a frozen copy of it."""
    if is_lora(policy):
        return AdaptersDisabled(policy)
    return freeze(copy.deepcopy(policy))


# ---------------------------------------------------------------- LoRA (peft)

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


class Critic(nn.Module):
    """A value head on a causal backbone: one value per position, [b, L].

    Built from the reward model (the usual choice: its head already reads "how good is this
    prefix") or from the policy's backbone with a fresh head.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask), use_cache=False,
        ).last_hidden_state
        return self.head(hidden).squeeze(-1).float()


def _score_head(model: nn.Module) -> nn.Module:
    for name in ("score", "classifier", "v_head"):
        head = getattr(model, name, None)
        if isinstance(head, nn.Module):
            return head
    raise ValueError(f"{type(model).__name__}: no reward head found (score/classifier/v_head)")


def build_critic(init: str, reward_model: nn.Module, policy: nn.Module, rm_is_causal: bool,
                 same_tokenizer: bool, gradient_checkpointing: bool = False) -> tuple[Critic, str]:
    """Return the critic and what it was initialised from (after any fallback).

    ``policy`` is the plain causal LM, before any adapters are added to it.
    """
    if init == "reward_model" and not (rm_is_causal and same_tokenizer):
        why = "bidirectional" if not rm_is_causal else "with another tokenizer"
        log.warning("ppo.critic_init=reward_model: the reward model is %s, so it cannot read "
                    "policy prefixes as values; initialising the critic from the policy", why)
        init = "policy"
    if init == "reward_model":
        rm = copy.deepcopy(reward_model)
        critic = Critic(rm.base_model, _score_head(rm))
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
