"""Generation backends: how rollouts are sampled (``generation=<backend>``).

- ``spec``: the :class:`Generator` protocol a backend implements, :class:`Sampling`, :class:`Backend`;
- ``rollout``: :class:`Rollout`, what a generator returns;
- ``sampling``: next-token sampling as transformers' `generate` does it;
- ``hf``: transformers' `generate` (dynamic KV cache), the reference;
- ``static``: a static KV cache and red's own decode loop, the step compiled on GPU.

``generation=auto`` (the default) picks the fastest backend that supports the model on the
run's device: ``static`` on CUDA for a decoder-only transformers model, ``hf`` otherwise (on
CPU the two take the same time; see static.py).
"""

from __future__ import annotations

import functools

import torch

from red_cli.generation.rollout import Rollout
from red_cli.generation.spec import Backend, Generator, Sampling
from red_cli.generation.static import static_supports

__all__ = ["AUTO", "Backend", "Generator", "Rollout", "Sampling", "backend_choices",
           "build_generator", "registry", "static_supports"]

AUTO = "auto"


@functools.cache
def registry() -> dict[str, Backend]:
    """name -> Backend."""
    from red_cli.generation import hf, static

    return {b.name: b for b in (hf.BACKEND, static.BACKEND)}


def backend_choices() -> tuple[str, ...]:
    """What ``generation.backend`` accepts: ``auto`` and every registered backend."""
    return (AUTO, *registry())


def resolve(name: str, device: torch.device | str, model=None) -> str:
    """The backend ``generation.backend=name`` runs: ``auto`` -> static on CUDA when the model
    supports it, else hf; any other name as it is."""
    if name != AUTO:
        return name
    cuda = torch.device(device).type == "cuda"
    return "static" if cuda and (model is None or static_supports(model)) else "hf"


def build_generator(gen_cfg, tokenizer, sampling: Sampling, device: torch.device | str = "cpu",
                    model=None) -> Generator:
    """The generator a ``generation`` config node selects, built once for a run; ``device``
    and ``model`` decide what ``auto`` runs."""
    backends = registry()
    if gen_cfg.backend not in backend_choices():
        raise ValueError(f"generation.backend={gen_cfg.backend!r}: must be one of "
                         + ", ".join(backend_choices()))
    backend = backends[resolve(gen_cfg.backend, device, model)]
    return backend.build(gen_cfg[backend.name], tokenizer, sampling)


def describe(generator: Generator, device: torch.device | str, chosen: str) -> str:
    """What a start-up line says of the generator: its backend, how it runs, and whether
    ``auto`` chose it (``chosen``: the ``generation.backend`` it was built from)."""
    text = generator.describe(torch.device(device))
    return text + (" (auto)" if chosen == AUTO else "")
