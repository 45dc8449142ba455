"""The process a verb runs in: which device, DeepSpeed's accelerator, quiet libraries, and
the few torch.distributed collectives shared by training and the reward pipeline.

Called before anything imports deepspeed (it picks its accelerator at import time) by every
verb that loads a model: `red train`, `red eval`, `red explain`.
"""

from __future__ import annotations

import logging
import os
import warnings

import torch

from red_cli.errors import ConfigError


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda: no CUDA device is visible; use device=cpu or device=auto")
    return device


def prepare_env(device: str) -> str:
    """Call before anything imports deepspeed: it picks its accelerator at import time."""
    kind = pick_device(device)
    if kind == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    return kind


def quiet_libraries() -> None:
    """Per-file download/loading bars of transformers and datasets drown the training bar."""
    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    # Raised from inside DeepSpeed's and peft's own calls (ZeRO-3 collectives, LoRA on GPT-2's
    # Conv1D), once per step: nothing a user can act on.
    for message in (r"`torch\.distributed\.\w+` is deprecated",
                    r"`is_gradient_checkpointing` is deprecated",
                    r"fan_in_fan_out is set to False"):
        warnings.filterwarnings("ignore", message=message)


# ---------------------------------------------------------------- collectives (no-ops alone)

def all_reduce_mean(values: dict[str, float], world_size: int) -> dict[str, float]:
    """Mean of each scalar over ranks (one collective for the whole dict)."""
    if world_size == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return {k: (t[i] / world_size).item() for i, k in enumerate(keys)}


def gather_objects(obj, world_size: int) -> list:
    if world_size == 1:
        return [obj]
    out = [None] * world_size
    torch.distributed.all_gather_object(out, obj)
    return out


def barrier(world_size: int) -> None:
    if world_size > 1:
        torch.distributed.barrier()
