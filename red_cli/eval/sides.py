"""The two sides of `red eval` (and the policy `red explain` samples): which policy, which
prompts, how it samples.

The candidate is a run directory (its ``checkpoints/final_policy``) or a model path; the
baseline is ``sft`` (the policy the candidate run started from), another run, or a model
path. Prompts come from the run's eval split through its dataset adapter unless given;
sampling settings from the run's ``ppo`` keys unless given. Batch k of prompts is sampled
with the seed ``batch_seed(seed, k)`` on both sides.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from omegaconf import OmegaConf

from red_cli import models
from red_cli import runs as rundirs
from red_cli.config.schema import PPOConfig
from red_cli.data import encode_prompt, left_pad, load_prompts, options_from
from red_cli.errors import EvalError, UserError
from red_cli.generation import Generator, Rollout, Sampling, build_generator
from red_cli.runs import RunInfo, load_run
from red_cli.toy import resolve_path


@dataclass
class PolicySpec:
    """How to load one side: a policy folder (resolved), its tokenizer and settings."""

    label: str
    path: str
    tokenizer: str
    dtype: str = "float32"
    trust_remote_code: bool = False
    use_chat_template: bool = False


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=,+-]", "-", text).strip("-")[:80] or "model"


def _spec_from_run(run: RunInfo, key: str, label: str) -> PolicySpec:
    pol = run.cfg.policy
    try:
        path = str(rundirs.final_policy(run.dir, key))
    except UserError as err:
        raise EvalError(str(err)) from None
    return PolicySpec(label, path, path, pol.get("dtype", "float32"),
                      bool(pol.get("trust_remote_code", False)),
                      bool(pol.get("use_chat_template", False)))


def _spec_from_path(path: str, toy_cfg: Any, label: str, like: PolicySpec | None = None) -> PolicySpec:
    real = resolve_path(path, toy_cfg)
    if like is None:
        return PolicySpec(label, real, real)
    return PolicySpec(label, real, real, like.dtype, like.trust_remote_code, like.use_chat_template)


def check_local_path(arg: str, key: str) -> None:
    """A path-looking argument that does not exist: say so, naming it."""
    from red_cli.config.checks import looks_local

    if (looks_local(arg) or os.sep in arg) and not Path(arg).expanduser().exists():
        raise EvalError(f"{key}={arg!r}: no such file or directory (a run directory or a "
                        "model folder is expected)")


def candidate_spec(run_arg: str, toy_cfg: Any, key: str = "run") -> tuple[PolicySpec, RunInfo | None]:
    """The candidate: a run directory's final policy, or a model path (``toy:policy`` too)."""
    run = load_run(run_arg)
    if run is not None:
        return _spec_from_run(run, key, run.dir.name), run
    local = run_arg.startswith((".", "/", "~")) or Path(run_arg).exists()
    if local and not (Path(run_arg).expanduser() / "config.json").is_file():
        raise EvalError(f"{key}={run_arg!r} is neither a run directory (no config.yaml) nor a "
                        "model folder (no config.json)")
    return _spec_from_path(run_arg, toy_cfg, slug(Path(run_arg).name or run_arg)), None


SFT_NEEDS_RUN = ("baseline=sft needs run= to be a run directory (its config names the policy "
                 "the run started from); give baseline= a run directory or a model path")


def baseline_spec(arg: str, candidate: PolicySpec, run: RunInfo | None, toy_cfg: Any) -> PolicySpec:
    """``sft`` (the candidate run's starting policy), another run, or a model path."""
    if arg == "sft":
        if run is None:
            raise EvalError(SFT_NEEDS_RUN)
        pol = run.cfg.policy
        spec = _spec_from_path(pol.path, run.cfg.get("toy"), "sft", candidate)
        if pol.get("tokenizer"):
            spec.tokenizer = resolve_path(pol.tokenizer, run.cfg.get("toy"))
        return spec
    other = load_run(arg)
    if other is not None:
        return _spec_from_run(other, "baseline", other.dir.name)
    if arg.startswith((".", "/", "~")) and not (Path(arg).expanduser() / "config.json").is_file():
        raise EvalError(f"baseline={arg!r}: not `sft`, a run directory or a model folder")
    return _spec_from_path(arg, toy_cfg, slug(Path(arg).name or arg), candidate)


def toy_settings(run: RunInfo | None, fallback: Any) -> Any:
    """The toy world a run was trained in (its config.yaml), else the verb's `toy` node."""
    if run is not None and run.cfg.get("toy") is not None:
        return run.cfg.toy
    return fallback


# --------------------------------------------------------------------------- settings


def prompt_settings(prompts: Any, run: RunInfo | None, n: int) -> dict:
    """Where prompts come from: explicit keys, else the run's eval split, else the toy's.

    The run's ``dataset.adapter`` (and its options) applies unless ``prompts.column`` names a
    plain column; the run's ``data_dir`` only when the path is the run's too."""
    ds = run.cfg.dataset if run is not None else None
    path = prompts.path
    split = prompts.split
    from_run = path is None and ds is not None
    if from_run:
        path = ds.get("eval_path") or ds.path
        split = split or (ds.get("eval_split") if ds.get("eval_path") else ds.get("split"))
    out = {
        "path": path or "toy:prompts_eval",
        "split": split or "test",
        "column": prompts.column or (ds.prompt_column if ds is not None else "prompt"),
        "n": int(n),
        "max_prompt_length": int(prompts.max_prompt_length or
                                 (ds.get("max_prompt_length") if ds is not None else None) or 64),
    }
    adapter = ds.get("adapter", "column") if ds is not None and prompts.column is None else "column"
    if adapter != "column":
        # Only then: an evaluation made before adapters existed keeps its fingerprint.
        out.update(adapter=adapter, adapter_options=options_from(ds),
                   data_dir=ds.get("data_dir") if from_run else None)
    return out


def read_prompts(prompt_cfg: dict, toy_cfg: Any) -> list[str]:
    """The prompt texts :func:`prompt_settings` describes."""
    return load_prompts(prompt_cfg["path"], prompt_cfg["split"], prompt_cfg["column"],
                        key="prompts.path", toy_cfg=toy_cfg,
                        adapter=prompt_cfg.get("adapter", "column"),
                        options=prompt_cfg.get("adapter_options"), data_dir=prompt_cfg.get("data_dir"))


def sampling_settings(sampling: Any, run: RunInfo | None) -> Sampling:
    """Sampling: explicit keys, else the run's `ppo` settings, else the PPO defaults."""
    ppo = run.cfg.ppo if run is not None else OmegaConf.structured(PPOConfig)
    out = {}
    for key in ("max_new_tokens", "temperature", "top_k", "top_p"):
        value = sampling.get(key)
        out[key] = ppo.get(key) if value is None else value
    return Sampling(**out)


def batch_seed(seed: int, batch_index: int) -> int:
    """The sampling seed of prompt batch ``batch_index`` (the same on both sides)."""
    return seed * 1_000_003 + batch_index


# --------------------------------------------------------------------------- generation


class LoadedPolicy(NamedTuple):
    spec: PolicySpec
    model: Any
    tokenizer: Any
    generator: Generator


def load_side(spec: PolicySpec, device: str, generation: Any, sampling: Sampling) -> LoadedPolicy:
    """One side's policy on ``device``, with the generator (``generation`` node) it samples with."""
    tokenizer = models.load_tokenizer(spec.tokenizer, spec.trust_remote_code)
    model = models.load_policy(spec.path, spec.dtype, spec.trust_remote_code).to(device)
    model.eval()
    sampling = dataclasses.replace(sampling, eos_token_ids=models.eos_token_ids(tokenizer, model))
    return LoadedPolicy(spec, model, tokenizer,
                        build_generator(generation, tokenizer, sampling, device, model))


def usable_prompts(texts: list[str], tokenizer, n: int, max_prompt_length: int,
                   use_chat_template: bool = False) -> list[str]:
    """The first ``n`` prompts that encode to 1..max_prompt_length policy tokens."""
    kept = []
    for text in texts:
        if 0 < len(encode_prompt(tokenizer, text, use_chat_template)) <= max_prompt_length:
            kept.append(text)
            if len(kept) == n:
                break
    return kept


def sample(side: LoadedPolicy, prompts: list[str], seed: int, device: str) -> Rollout:
    """Responses of one side to ``prompts``, sampled under ``torch.manual_seed(seed)``."""
    import torch

    tok = side.tokenizer
    ids, mask = left_pad([encode_prompt(tok, p, side.spec.use_chat_template) for p in prompts],
                         tok.pad_token_id)
    torch.manual_seed(seed)
    return side.generator.generate(side.model, prompts, ids.to(device), mask.to(device))


