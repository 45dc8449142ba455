"""Build the four models of a PPO run from flat arguments.

policy (trained), reference (frozen copy of the starting policy), critic (trained; a value
head on a causal backbone) and reward model (frozen scalar classifier). Paths are hub ids,
local folders, or `toy:*` names of the embedded task; all load through `from_pretrained`.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
from torch import nn

from red_cli.checks import looks_local
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
        path, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code
    )
    disable_dropout(model)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    return model


def load_reward_model(path: str, dtype: str = "float32", trust_remote_code: bool = False,
                      key: str = "reward_model.path") -> nn.Module:
    from transformers import AutoModelForSequenceClassification

    _check_exists(path, key)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code
    )
    if model.config.num_labels != 1:
        raise ValueError(
            f"{key}={path!r}: a reward model needs one scalar output (num_labels=1), "
            f"this one has {model.config.num_labels}"
        )
    freeze(model)
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
    """A frozen copy of the starting policy (the KL anchor)."""
    return freeze(copy.deepcopy(policy))


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
                 same_tokenizer: bool) -> tuple[Critic, str]:
    """Return the critic and what it was initialised from (after any fallback)."""
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
    critic.train()
    critic.requires_grad_(True)
    return critic, init
