"""abc's attention row: the pooled token's last-layer attention, without attention maps.

The model keeps its fast attention (SDPA, flash): only the LAST layer's attention call is
routed through :func:`_pooled_row_attention`, an AttentionInterface entry that runs the
model's own kernel and then recomputes the one pooled row from the exact query/key tensors
that kernel received (after rotary embeddings, QK norms, GQA grouping). Extra cost:
O(b * heads * L * head_dim) compute and O(b * heads * L) memory. No layer returns maps.

The entry is registered with transformers the first time a capture runs (not on import).
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from red_cli.models.anatomy import self_attention_modules

_ROW_IMPL = "red_pooled_row"

@dataclass
class _RowRequest:
    inner: str  # the attention implementation the model was loaded with
    pooled: Tensor  # [b] query index whose row we want
    key_mask: Tensor  # [b, L] bool, real tokens
    causal: bool
    row: Tensor | None = None


def _inner_attention(module: nn.Module, name: str):
    if name == "eager":
        # Each HF model file defines its own eager kernel; use that one.
        fn = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
        if fn is None:
            raise ValueError(f"{type(module).__name__}: no eager_attention_forward to wrap")
        return fn
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    return ALL_ATTENTION_FUNCTIONS.get_interface(name, None)


def _pooled_row_attention(module, query, key, value, attention_mask, *args, **kwargs):
    """AttentionInterface entry: run the model's own kernel, then recompute one row.

    query [b, h, L, d], key [b, kv, L, d] (kv divides h; head j uses kv head j // (h/kv),
    the grouping of transformers' ``repeat_kv``).
    """
    req: _RowRequest = module._red_row_request
    out = _inner_attention(module, req.inner)(
        module, query, key, value, attention_mask, *args, **kwargs
    )
    if kwargs.get("s_aux") is not None or kwargs.get("sinks") is not None:
        raise NotImplementedError("attention sinks are not supported by the abc attention row")
    scaling = kwargs.get("scaling")
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    b, h, _, d = query.shape
    kv, lk = key.shape[1], key.shape[2]
    ar = torch.arange(b, device=query.device)
    q = query[ar, :, req.pooled].float().reshape(b, kv, h // kv, d)  # [b, kv, g, d]
    logits = torch.einsum("bkgd,bkld->bkgl", q, key.float()).reshape(b, h, lk) * scaling
    softcap = kwargs.get("softcap")
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    if isinstance(attention_mask, Tensor) and attention_mask.ndim == 4:
        # The mask the kernel used (padding, causality, sliding window): take the pooled row.
        m = attention_mask.expand(b, -1, query.shape[2], -1)[ar, :, req.pooled]  # [b, 1|h, L]
        logits = logits.masked_fill(~m, -math.inf) if m.dtype == torch.bool else logits + m.float()
    else:
        allowed = req.key_mask[:, :lk]
        if req.causal:
            allowed = allowed & (torch.arange(lk, device=query.device) <= req.pooled[:, None])
        logits = logits.masked_fill(~allowed[:, None, :], -math.inf)
    row = torch.softmax(logits, dim=-1).mean(1)
    req.row = torch.where(req.key_mask[:, :lk], row, torch.zeros_like(row))
    return out


def _register() -> None:
    """Make :func:`_pooled_row_attention` an attention implementation transformers can call
    by name (a dict entry; repeating it changes nothing)."""
    from transformers import AttentionInterface

    AttentionInterface.register(_ROW_IMPL, _pooled_row_attention)


_LAST_ATTENTION: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()


def _last_self_attention(model: nn.Module) -> nn.Module:
    """The last layer's self-attention module (looked up once per model)."""
    module = _LAST_ATTENTION.get(model)
    if module is None:
        modules = self_attention_modules(model)
        if not modules:
            raise ValueError(
                f"{type(model).__name__}: no self-attention module with `config` and "
                "`layer_idx` or `is_causal`; the abc attention row needs a transformers model "
                "using the AttentionInterface"
            )
        # By layer index where modules have one, else the last in module order.
        order = {id(m): i for i, m in enumerate(modules)}
        module = _LAST_ATTENTION[model] = max(
            modules, key=lambda m: (vars(m).get("layer_idx", -1), order[id(m)])
        )
    return module


@contextlib.contextmanager
def capture_pooled_row(
    model: nn.Module, pooled: Tensor, key_mask: Tensor, causal: bool
) -> Iterator[_RowRequest]:
    """Route only the LAST layer's attention call through :func:`_pooled_row_attention`.

    That module gets a shallow copy of the config naming our implementation; the model's own
    config (and hence the mask it builds and every other layer) keeps its implementation.
    """
    _register()
    module = _last_self_attention(model)
    original = module.config
    inner = original._attn_implementation or "eager"
    if inner == _ROW_IMPL:
        raise RuntimeError("nested attention-row capture on the same model")
    shim = copy.copy(original)
    # Bypass the property setter: it would recurse into sub-configs the copy shares.
    shim._attn_implementation_internal = _ROW_IMPL
    req = _RowRequest(inner=inner, pooled=pooled, key_mask=key_mask.bool(), causal=causal)
    module.config = shim
    module._red_row_request = req
    try:
        yield req
    finally:
        module.config = original
        del module._red_row_request
    if req.row is None:
        raise RuntimeError(
            f"{type(module).__name__} did not dispatch through transformers' AttentionInterface; "
            "cannot recompute the attention row"
        )
