"""Load tokenizers, policies and reward models from hub ids, local folders or `toy:*` names.

Every loader takes flat arguments and the config key it serves, so a path problem is reported
as that key. A local folder with ``*.safetensors`` loads from those only, never from pickles.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from torch import nn

from red_cli.errors import ConfigError
from red_cli.models import preflight
from red_cli.models.anatomy import output_layer

log = logging.getLogger("red")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _model_config(path: str, key: str, role: str, trust_remote_code: bool,
                  label_weights: list[float] | None = None, score_head: str | None = None):
    """The config of ``path`` if it exists and fits ``role`` (``models.preflight``), so a bad
    path is one ConfigError naming ``key``, not a network error deep inside huggingface_hub or
    a random head silently put on a model of the wrong kind."""
    config = preflight.model_config(path, key, trust_remote_code)
    problem = preflight.role_problem(config, role, path, key, label_weights, score_head)
    if problem:
        raise ConfigError(problem)
    return config


def load_tokenizer(path: str, trust_remote_code: bool = False, key: str = "policy.path"):
    tok = preflight.tokenizer(path, key, trust_remote_code, cache_first=False)
    if tok.pad_token_id is None:
        # Padding is always masked out, so any id serves; EOS is the usual choice (TRL).
        tok.pad_token = tok.eos_token
    if tok.eos_token_id is None:
        raise ConfigError(f"{key}={path!r}: the tokenizer has no EOS token; responses could never end")
    return tok


def first_non_finite_parameter(model: nn.Module) -> str | None:
    """The name of the first parameter holding a NaN or infinity, or None."""
    for name, param in model.named_parameters():
        if param.numel() and not bool(torch.isfinite(param.detach()).all()):
            return name
    return None


def eos_token_ids(tokenizer, model: nn.Module | None = None) -> tuple[int, ...]:
    """Every token id that ends a response: the tokenizer's EOS, then those the model's
    generation config lists (LLaMA-3 instruct ends a turn with <|eot_id|>, not its EOS)."""
    ids = [tokenizer.eos_token_id]
    config = getattr(model, "generation_config", None)
    extra = getattr(config, "eos_token_id", None)
    for i in [extra] if isinstance(extra, int) else list(extra or []):
        if isinstance(i, int) and i not in ids:
            ids.append(i)
    return tuple(ids)


def load_policy(path: str, dtype: str = "float32", trust_remote_code: bool = False,
                gradient_checkpointing: bool = False, key: str = "policy.path") -> nn.Module:
    from transformers import AutoModelForCausalLM

    _model_config(path, key, "policy", trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code, **safetensors_only(path)
    )
    disable_dropout(model)
    fuse_gelu(model)
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
                      label_weights: list[float] | None = None,
                      score_head: str | None = None) -> nn.Module:
    """A frozen scalar classifier. ``label_weights`` turns a k-label classifier into one:
    score = sum_k w_k * logit_k (e.g. [-1, 1]: logit[positive] - logit[negative]).

    ``score_head``: the checkpoint's name for a one-output layer that the architecture calls
    ``score`` (safe-rlhf's LlamaModelForScore saves ``score_head``): renamed while loading, and
    refused if the checkpoint has no such weights (a random head would score silently)."""
    from transformers import AutoModelForSequenceClassification

    # A causal LM would load here too, with a random score head: refused before loading.
    _model_config(path, key, "reward_model", trust_remote_code, label_weights, score_head)
    extra = {}
    if score_head:
        extra = {"num_labels": 1, "output_loading_info": True,
                 "key_mapping": {rf"^{re.escape(score_head)}\.": "score."}}
    model = AutoModelForSequenceClassification.from_pretrained(
        path, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code, **safetensors_only(path),
        **extra)
    if score_head:
        model, info = model
        missing = [k for k in info.get("missing_keys", ()) if k.startswith("score.")]
        if missing or not hasattr(model, "score"):
            raise ConfigError(
                f"{key}={path!r}: no `{score_head}.*` weights in the checkpoint to serve as its "
                f"`score` layer (missing: {', '.join(missing) or 'score'}); check "
                f"{key.rsplit('.', 1)[0]}.score_head")
    if label_weights is not None:
        fold_label_weights(model, label_weights)
    elif model.config.num_labels != 1:
        raise ConfigError(
            f"{key}={path!r}: a reward model needs one scalar output (num_labels=1), "
            f"this one has {model.config.num_labels}; set reward_model.label_weights "
            f"(one weight per label, score = sum_k w_k * logit_k) to combine them"
        )
    fuse_gelu(model)
    freeze(model)
    return model


def fold_label_weights(model: nn.Module, weights: list[float],
                       key: str = "reward_model.label_weights") -> nn.Module:
    """Replace the classifier's final Linear(H, k) by Linear(H, 1) computing sum_k w_k logit_k.

    weight = w @ W, bias = w @ b, so every reader of the head (sequence score, td prefix
    scores, abc attention) sees the combined score with no other change. In place.
    """
    owner, name, head = output_layer(model)
    if not isinstance(head, nn.Linear):
        raise ConfigError(f"{key}: {type(model).__name__} has no output Linear to fold the weights "
                          "into (looked at score, classifier and classifier.out_proj)")
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


class FusedGELUTanh(nn.Module):
    """The tanh approximation of GELU in one torch kernel (``F.gelu(approximate="tanh")``)."""

    def forward(self, x):
        return nn.functional.gelu(x, approximate="tanh")


def fuse_gelu(model: nn.Module) -> nn.Module:
    """Swap transformers' ``gelu_new`` / ``gelu_fast`` modules (GPT-2's, GPT-J's, ...: the
    tanh formula written as five tensor operations, each with its own pass over the
    activations and its own saved tensors for backward) for the same function in one kernel.
    The two agree to 2.4e-7; a GPT-2 forward and backward takes ~0.77x of the time on CPU
    (docs/PERFORMANCE.md). The checkpoint and its config are untouched."""
    from transformers.activations import FastGELUActivation, NewGELUActivation

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) in (NewGELUActivation, FastGELUActivation):
                setattr(parent, name, FusedGELUTanh())
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
