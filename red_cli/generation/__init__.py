"""Generation backends: how rollouts are sampled (``generation=<backend>``).

- ``spec``: the :class:`Generator` protocol a backend implements, :class:`Sampling`, :class:`Backend`;
- ``rollout``: :class:`Rollout`, what a generator returns;
- ``hf``: transformers' `generate` (today's only backend).
"""

from __future__ import annotations

import functools

from red_cli.generation.rollout import Rollout
from red_cli.generation.spec import Backend, Generator, Sampling

__all__ = ["Backend", "Generator", "Rollout", "Sampling", "build_generator", "registry"]


@functools.cache
def registry() -> dict[str, Backend]:
    """name -> Backend."""
    from red_cli.generation import hf

    return {b.name: b for b in (hf.BACKEND,)}


def build_generator(gen_cfg, tokenizer, sampling: Sampling) -> Generator:
    """The generator a ``generation`` config node selects, built once for a run."""
    backends = registry()
    if gen_cfg.backend not in backends:
        raise ValueError(f"generation.backend={gen_cfg.backend!r}: must be one of "
                         + ", ".join(backends))
    backend = backends[gen_cfg.backend]
    return backend.build(gen_cfg[backend.name], tokenizer, sampling)
