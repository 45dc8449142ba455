"""The resumable store of one evaluation: ``generations.jsonl`` (one judged item per line,
appended as each batch finishes) and ``eval_config.yaml`` (the settings a resume must match).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from red_cli.errors import EvalError
from red_cli.eval.sides import PolicySpec
from red_cli.generation import Sampling

# Judge keys that change how requests are sent, not what the answers are.
_TRANSPORT_KEYS = ("concurrency", "max_retries", "backoff_s", "timeout_s", "api_key_env")


def fingerprint(cfg: DictConfig, cand: PolicySpec, base: PolicySpec, prompts: dict,
                sampling: Sampling, cost_model: str | None = None, backend: str = "hf") -> dict:
    """What a resumed evaluation must share with the one it continues (``cost_model``: the
    path of the cost model that scores each item, if any; ``backend``: the generation backend
    that samples, ``generation=auto`` resolved)."""
    judge = {k: v for k, v in OmegaConf.to_container(cfg.judge, resolve=True).items()
             if k not in _TRANSPORT_KEYS}
    # prompts.n is left out: items are the first n usable prompts, so a larger n extends
    # a finished evaluation instead of starting it again.
    prompts = {k: v for k, v in prompts.items() if k != "n"}
    out = {"candidate": cand.path, "baseline": base.path, "judge": judge, "prompts": prompts,
           "sampling": {k: v for k, v in dataclasses.asdict(sampling).items()
                        if k != "eos_token_ids"},  # read from the models, not a setting
           "seed": int(cfg.seed),
           "batch_size": int(cfg.batch_size), "tie_margin": float(cfg.tie_margin)}
    if backend != "hf":
        # Only then: evaluations made before backends existed (or sampled by hf since, as
        # `auto` does on CPU) keep their fingerprint.
        out["generation"] = {**OmegaConf.to_container(cfg.generation, resolve=True),
                             "backend": backend}
    if cost_model is not None:
        # Only then, likewise; items scored by another cost model do not mix with these.
        out["cost_model"] = cost_model
    return out


def read_done(path: Path) -> dict[int, dict]:
    """The judged items of a generations.jsonl by index (a line cut short is dropped)."""
    done: dict[int, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a line cut short by an interruption: that item is redone
                done[row["index"]] = row
    return done


def prepare(out: Path, fingerprint: dict, overwrite: bool) -> dict[int, dict]:
    """Create ``out``; return the finished items a resume keeps (none if settings changed)."""
    out.mkdir(parents=True, exist_ok=True)
    gens, frozen = out / "generations.jsonl", out / "eval_config.yaml"
    if overwrite:
        gens.unlink(missing_ok=True)
    elif gens.exists() and frozen.exists():
        before = OmegaConf.to_container(OmegaConf.load(frozen))
        if before != fingerprint:
            changed = sorted(k for k in fingerprint if before.get(k) != fingerprint[k])
            raise EvalError(
                f"{out} holds an evaluation with other settings ({', '.join(changed)} differ); "
                "pass overwrite=true to start again or output_dir=... to keep both"
            )
    OmegaConf.save(OmegaConf.create(fingerprint), frozen)
    return read_done(gens)


