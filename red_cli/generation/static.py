"""static: a pre-allocated KV cache and red's own decode loop, the decode step compiled on GPU.

transformers' `generate` with its dynamic cache grows every layer's keys and values by one
column per token (a copy per step) and runs its Python machinery around every forward; its
shapes change each step, so nothing can be captured once and replayed. Here:

- prompts are left-padded to a multiple of ``prompt_bucket`` (the pad columns are masked and
  positions come from the mask, so no logit changes), and the cache is a transformers
  ``StaticCache`` of ``bucket + max_new_tokens`` columns, kept from one rollout to the next
  while the shapes stay the same;
- the prompt runs once (prefill), then one forward per new token with fixed shapes: [b, 1]
  ids and positions, one cache position, and the step's 4D attention mask, built before the
  step from a [b, bucket + max_new_tokens] padding mask made once (as transformers' own
  static-cache generation builds it, outside the compiled forward);
- with ``compile`` on, that one-token step is `torch.compile`d as transformers compiles its
  own static-cache generation (mode "reduce-overhead": on CUDA the step becomes a replayed
  CUDA graph); sampling stays outside the graph, in the same operations as `generate`
  (``sampling.sample_next``);
- rows that ended get the pad token, and whether all rows ended is asked every
  ``stop_check_every`` steps (each ask waits for the device);
- a LoRA policy (peft) samples with its adapters merged into the weights for the rollout
  (one matmul per layer instead of three) and the weights are restored exactly afterwards
  (the merged layers' original weights are copied back, not un-merged by subtraction).

On CPU with compile off this draws the same tokens as `hf` from the same seed (the same
logits and the same sampling operations; tests/unit/test_generation_static.py), and takes
about the same time: the CPU's cost is the model's own forward. Compiling on CPU takes 7-25 s
per shape for rollouts 0.79-0.94x as long (docs/PERFORMANCE.md), so ``compile=auto`` compiles
on CUDA only.
Under ZeRO-3 the gathered weights are new tensors every rollout, which a captured graph cannot
follow: the step then runs eagerly.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from red_cli.errors import ConfigError
from red_cli.generation.rollout import Rollout, from_samples, sampling_mode
from red_cli.generation.sampling import sample_next
from red_cli.generation.spec import Backend, Sampling

log = logging.getLogger("red")

COMPILE_CHOICES = ("auto", "on", "off")


@dataclass
class StaticConfig:
    # Compile the one-token decode step: auto (on CUDA; CUDA graphs), on, off.
    compile: str = "auto"
    # Prompts are left-padded to a multiple of this many tokens: fewer shapes to compile.
    prompt_bucket: int = 16
    # Ask whether every response has ended once per this many steps (a device sync each);
    # 0: every step on CPU, every 8 steps on GPU.
    stop_check_every: int = 0


def _lora_layers(model: nn.Module) -> list:
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return []
    return [m for m in model.modules() if isinstance(m, LoraLayer)]


@contextlib.contextmanager
def merged_lora(model: nn.Module):
    """The module to sample with: a peft LoRA model's base model with the adapters merged into
    its weights while the context lasts, then the exact original weights back; any other
    model as it is."""
    layers = _lora_layers(model)
    if not layers or not hasattr(model, "get_base_model"):
        yield model
        return
    saved = [(layer, layer.get_base_layer().weight.detach().clone()) for layer in layers]
    try:
        for layer, _ in saved:
            layer.merge()
        yield model.get_base_model()
    finally:
        for layer, weight in saved:
            layer.unmerge()
            layer.get_base_layer().weight.data.copy_(weight)


def cache_argument(model: nn.Module) -> str | None:
    """The name under which ``model``'s forward takes a KV cache: ``cache`` (transformers
    since ~5.20), ``past_key_values`` (before), or None (a model ``static`` cannot drive)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return None
    params = inspect.signature(base.forward).parameters
    if "position_ids" not in params:
        return None
    return next((name for name in ("cache", "past_key_values") if name in params), None)


def static_supports(model: nn.Module) -> bool:
    """Whether ``static`` can sample from ``model``: a decoder-only transformers model whose
    forward takes a KV cache and ``position_ids`` (a peft model: its base model)."""
    return cache_argument(model) is not None


def _step_masks(model: nn.Module, arg: str, cache, mask: Tensor, batch: int, dtype):
    """(position, cache_position) -> the attention mask of one decode step.

    As transformers' own static-cache generation does: the 4D mask is built before the step
    (``masking_utils.create_masks_for_generate``, or the model's own), so that the compiled
    step does not build it from the cache's state inside the graph. Where that function is
    missing or takes other arguments (transformers versions), the 2D mask is passed and the
    model builds the 4D one itself."""
    plain = lambda position, cache_position: mask  # noqa: E731
    try:
        from transformers.masking_utils import create_masks_for_generate
    except ImportError:
        return plain
    build = getattr(model, "create_masks_for_generate", None) or create_masks_for_generate
    params = inspect.signature(build).parameters
    if not {"config", "inputs_embeds", "attention_mask", "position_ids"} <= set(params):
        return plain
    shape = torch.empty((batch, 1, 0), dtype=dtype, device=mask.device)

    def step_mask(position, cache_position):
        extra = {"cache_position": cache_position} if "cache_position" in params else {}
        built = build(config=model.config, inputs_embeds=shape, attention_mask=mask,
                      position_ids=position, **{arg: cache}, **extra)
        if isinstance(built, dict):
            return {k: v.contiguous() if isinstance(v, Tensor) else v for k, v in built.items()}
        return built.contiguous() if isinstance(built, Tensor) else built

    return step_mask


def _partitioned(model: nn.Module) -> bool:
    """True for ZeRO-3 parameters (gathered afresh for every rollout)."""
    return any(hasattr(p, "ds_id") for p in model.parameters())


def check(knobs: StaticConfig) -> list[tuple[str, object, str]]:
    problems = []
    if knobs.compile not in COMPILE_CHOICES:
        problems.append(("compile", knobs.compile, "must be one of " + ", ".join(COMPILE_CHOICES)))
    if knobs.prompt_bucket < 1:
        problems.append(("prompt_bucket", knobs.prompt_bucket, "must be >= 1"))
    if knobs.stop_check_every < 0:
        problems.append(("stop_check_every", knobs.stop_check_every,
                         "must be >= 0 (0: every step on CPU, every 8 on GPU)"))
    return problems


class StaticGenerator:
    name = "static"

    def __init__(self, knobs: StaticConfig, tokenizer, sampling: Sampling):
        problems = check(knobs)
        if problems:
            key, value, allowed = problems[0]
            raise ValueError(f"generation.static.{key}={value!r}: {allowed}")
        self.knobs = knobs
        self.tokenizer = tokenizer
        self.sampling = sampling
        self._cache = None  # (key, StaticCache)
        # id(model) -> its compiled forward, or "failed" (then the step runs eagerly)
        self._compiled: dict[int, object] = {}
        self._said = False

    def compiles(self, device: torch.device) -> bool:
        """Whether the decode step is compiled on ``device`` (before ZeRO-3 is considered)."""
        if self.knobs.compile == "auto":
            return device.type == "cuda"
        return self.knobs.compile == "on"

    def describe(self, device: torch.device) -> str:
        if not self.compiles(device):
            return "static (static KV cache, eager decode step)"
        graphs = " in a CUDA graph" if device.type == "cuda" else ""
        return f"static (static KV cache, compiled decode step{graphs})"

    def _step(self, model: nn.Module, device: torch.device):
        if not self.compiles(device) or _partitioned(model):
            if self.compiles(device) and not self._said:
                log.info("generation static: ZeRO-3 weights are gathered anew each rollout, "
                         "so the decode step runs without compiling")
                self._said = True
            return model
        key = id(model)
        if key not in self._compiled:
            mode = "reduce-overhead" if device.type == "cuda" else None
            self._compiled[key] = torch.compile(model, mode=mode, dynamic=False, fullgraph=False)
        return model if self._compiled[key] == "failed" else self._compiled[key]

    def _static_cache(self, model: nn.Module, batch: int, length: int, device, dtype):
        from transformers import StaticCache

        key = (id(model), batch, length, device, dtype)
        if self._cache is not None and self._cache[0] == key:
            cache = self._cache[1]
            cache.reset()
            return cache
        cache = StaticCache(config=model.config, max_cache_len=length)
        self._cache = (key, cache)
        return cache

    @torch.no_grad()
    def generate(self, model: nn.Module, prompts: list[str], query_ids: Tensor,
                 query_mask: Tensor) -> Rollout:
        tok, s = self.tokenizer, self.sampling
        eos = list(s.eos_token_ids) or [tok.eos_token_id]
        with sampling_mode(model), merged_lora(model) as lm:
            try:
                sampled = self._decode(lm, query_ids, query_mask, eos, tok.pad_token_id)
            except Exception as err:  # noqa: BLE001 (any failure of the compiler stack)
                if self._compiled.get(id(lm)) in (None, "failed"):
                    raise
                # A compiler or graph-capture failure: say so once, sample eagerly from now
                # on (this rollout starts again; its first draws are lost).
                log.warning("generation static: compiling the decode step failed (%s: %s); "
                            "it runs eagerly from now on", type(err).__name__, err)
                self._compiled[id(lm)] = "failed"
                sampled = self._decode(lm, query_ids, query_mask, eos, tok.pad_token_id)
        return from_samples(tok, prompts, query_ids, query_mask, sampled, eos)

    def _decode(self, model: nn.Module, query_ids: Tensor, query_mask: Tensor,
                eos: list[int], pad: int) -> Tensor:
        """[b, P] left-padded prompts -> [b, t] sampled ids, pad after a row's EOS; t <= the
        maximum, fewer when every row ended earlier."""
        s, device = self.sampling, query_ids.device
        arg = cache_argument(model)
        if arg is None:
            raise ConfigError(f"generation=static: {type(model).__name__}.forward takes no KV cache "
                              "with position ids (`cache` or `past_key_values`, `position_ids`); "
                              "use generation=hf")
        b, width = query_ids.shape
        bucket = self.knobs.prompt_bucket
        extra = -width % bucket
        if extra:
            query_ids = torch.cat([query_ids.new_full((b, extra), pad), query_ids], dim=1)
            query_mask = torch.cat([query_mask.new_zeros((b, extra)), query_mask], dim=1)
        prompt_len, new = query_ids.shape[1], s.max_new_tokens
        dtype = next(model.parameters()).dtype
        cache = self._static_cache(model, b, prompt_len + new, device, dtype)
        # Prompt padding masked; every later column open (the causal mask hides the future).
        mask = torch.cat([query_mask.long(), query_mask.new_ones((b, new), dtype=torch.long)], 1)
        positions = (query_mask.long().cumsum(1) - 1).clamp(min=0)
        cache_positions = torch.arange(prompt_len + new, device=device)
        out = model(input_ids=query_ids, attention_mask=mask, position_ids=positions,
                    cache_position=cache_positions[:prompt_len], use_cache=True,
                    logits_to_keep=1, **{arg: cache})
        step = self._step(model, device)
        step_mask = _step_masks(model, arg, cache, mask, b, dtype)
        position = positions[:, -1:]
        eos_ids = torch.tensor(eos, device=device)
        ended = torch.zeros(b, dtype=torch.bool, device=device)
        tokens = query_ids.new_full((b, new), pad)
        every = self.knobs.stop_check_every or (1 if device.type == "cpu" else 8)
        for t in range(new):
            token = sample_next(out.logits[:, -1], s)
            token = torch.where(ended, torch.full_like(token, pad), token)
            tokens[:, t] = token
            ended = ended | torch.isin(token, eos_ids)
            if t + 1 == new or ((t + 1) % every == 0 and bool(ended.all())):
                return tokens[:, :t + 1]
            position = position + 1
            cache_position = cache_positions[prompt_len + t:prompt_len + t + 1]
            out = step(input_ids=token[:, None], attention_mask=step_mask(position, cache_position),
                       position_ids=position, cache_position=cache_position, use_cache=True,
                       **{arg: cache})
        return tokens


BACKEND = Backend(name="static", knobs=StaticConfig,
                  build=lambda knobs, tok, s: StaticGenerator(knobs, tok, s),
                  summary="a static KV cache and red's decode loop; the step compiled "
                          "(CUDA graphs) on GPU",
                  check=check)
