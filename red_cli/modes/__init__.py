"""The redistribution modes: one file each in this package, found by name.

Every module here except ``spec`` defines ``MODE`` (a :class:`~red_cli.modes.spec.Mode`); the
registry reads them all, so a new training-free mode is one file here, one
``conf/redistribution/<name>.yaml`` and its tests (README: "Adding a redistribution mode").
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

from red_cli.modes.spec import Credit, Mode, Signals

__all__ = ["Credit", "Mode", "Signals", "gamma_warning", "get_mode", "knobs_of", "registry"]


@functools.cache
def registry() -> dict[str, Mode]:
    """name -> Mode for every mode module of this package, in name order."""
    modes: dict[str, Mode] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name == "spec":
            continue
        mode = getattr(importlib.import_module(f"{__name__}.{info.name}"), "MODE", None)
        if not isinstance(mode, Mode):
            raise TypeError(f"red_cli/modes/{info.name}.py defines no MODE = Mode(...)")
        if mode.name in modes:
            raise ValueError(f"two modes are named {mode.name!r}")
        modes[mode.name] = mode
    return modes


def get_mode(name: str) -> Mode:
    """The mode called ``name``; ValueError names the valid ones."""
    try:
        return registry()[name]
    except KeyError:
        raise ValueError(f"redistribution.mode={name!r}: must be one of "
                         + ", ".join(registry())) from None


def knobs_of(red_cfg) -> object:
    """The chosen mode's knobs from a ``redistribution`` config node (``redistribution.<mode>``)."""
    return red_cfg[red_cfg.mode]


def gamma_warning(mode: Mode, gamma: float) -> str | None:
    """A one-line warning when a dense mode is combined with gamma < 1, else None.

    With gamma = 1, td is potential-based reward shaping (potential = the prefix score;
    Ng et al. 1999), and abc/uniform move reward within an episode without changing its
    return, so the optimal policy matches sparse. With gamma < 1 earlier tokens are
    discounted differently, so the objective changes (RED, arXiv 2411.08302: return equivalence).
    """
    if mode.dense and gamma < 1.0:
        return (f"redistribution={mode.name} with gamma={gamma} < 1: dense per-token rewards are "
                "only return-equivalent to the sparse score (potential-based shaping) with gamma=1")
    return None
