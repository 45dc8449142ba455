"""Where things are inside a transformers model: wrappers, the scalar head, the backbone, the
self-attention modules, and whether attention is causal.

One home for every lookup by attribute name, so the reward model's scoring, the critic built
from it and the label-weight folding all agree on what "the head" is.
"""

from __future__ import annotations

import inspect

from torch import nn

# Attribute names under which decoder reward models keep their scalar head, in lookup order.
DECODER_HEAD_NAMES = ("score", "v_head", "value_head", "reward_head")
# Encoders (BERT-style sequence classifiers) call their output layer `classifier`.
HEAD_NAMES = (*DECODER_HEAD_NAMES, "classifier")
BACKBONE_NAMES = ("transformer", "model", "backbone")


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DeepSpeed engine, DDP or the LoRA reference wrapper (all keep it
    at ``.module``)."""
    while isinstance(getattr(model, "module", None), nn.Module):
        model = model.module
    return model


def causal_lm(model: nn.Module) -> nn.Module:
    """The transformers causal LM inside any wrappers, peft's included."""
    inner = unwrap(model)
    get_base = getattr(inner, "get_base_model", None)
    return get_base() if callable(get_base) else inner


def accepts_logits_to_keep(model: nn.Module) -> bool:
    """Whether the causal LM's forward can skip the LM head on positions we never read."""
    return "logits_to_keep" in inspect.signature(causal_lm(model).forward).parameters


def _first_child(model: nn.Module, names: tuple[str, ...]) -> str | None:
    """The first of ``names`` that is a submodule of ``model``."""
    return next((n for n in names if isinstance(getattr(model, n, None), nn.Module)), None)


def output_layer(model: nn.Module) -> tuple[nn.Module, str, nn.Module | None]:
    """(owner, attribute, module) of a sequence classifier's output layer: the first of
    ``HEAD_NAMES``, or ``classifier.out_proj`` for RoBERTa-style heads. module is None when
    nothing is found."""
    name = _first_child(model, HEAD_NAMES)
    if name is None:
        return model, "", None
    head = getattr(model, name)
    if not isinstance(head, nn.Linear) and isinstance(getattr(head, "out_proj", None), nn.Linear):
        return head, "out_proj", head.out_proj
    return model, name, head


def self_attention_modules(model: nn.Module) -> list[nn.Module]:
    """Innermost modules that own a config and a layer index (or an ``is_causal`` flag): the
    ones that call the AttentionInterface (GPT2Attention, LlamaAttention, BertSelfAttention,
    DistilBertSelfAttention, which has no layer index), in module order."""
    cands = {
        name: m
        for name, m in model.named_modules()
        # Plain attributes live in __dict__; reading it skips nn.Module.__getattr__'s raise.
        if (isinstance(vars(m).get("layer_idx"), int) or isinstance(vars(m).get("is_causal"), bool))
        and "config" in vars(m)
        and not vars(m).get("is_cross_attention", False)
        and "Cross" not in type(m).__name__
    }
    return [
        m
        for name, m in cands.items()
        if not any(other.startswith(name + ".") for other in cands if name)
    ]


def is_causal_rm(model: nn.Module) -> bool:
    """True if the reward model's self-attention is causal (decoder RM: one pass gives every
    prefix score); False for bidirectional encoders (BERT/RoBERTa/DeBERTa-style).

    Read from the attention modules' own ``is_causal`` flag (what the kernel obeys), else
    ``config.is_decoder`` (BERT-family configs), else the head's name (HF decoder
    classifiers call it ``score``, encoders ``classifier``)."""
    model = unwrap(model)
    flags = {getattr(m, "is_causal", None) for m in self_attention_modules(model)}
    flags.discard(None)
    if len(flags) == 1:
        return bool(flags.pop())
    is_decoder = getattr(model.config, "is_decoder", None)
    if isinstance(is_decoder, bool):
        return is_decoder
    return _first_child(model, DECODER_HEAD_NAMES) is not None


def causal_parts(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(backbone returning last_hidden_state, scalar head) of a decoder reward model."""
    head_name = _first_child(model, DECODER_HEAD_NAMES)
    if head_name is None:
        raise ValueError(
            f"{type(model).__name__}: cannot find the reward head; expected one of the "
            f"attributes {DECODER_HEAD_NAMES} (HF *ForSequenceClassification decoders use `score`)"
        )
    head = getattr(model, head_name)
    backbone = getattr(model, "base_model", model)
    if backbone is model:
        name = _first_child(model, BACKBONE_NAMES)
        backbone = getattr(model, name) if name else None
    if backbone is None:
        raise ValueError(
            f"{type(model).__name__}: cannot find the backbone; expected `base_model_prefix` "
            f"or one of the attributes {BACKBONE_NAMES}"
        )
    out_features = getattr(head, "out_features", 1)
    if out_features != 1:
        raise ValueError(
            f"{type(model).__name__}: the reward head has {out_features} outputs; a reward "
            "model needs num_labels=1"
        )
    return backbone, head
