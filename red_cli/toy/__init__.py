"""The embedded default task: a generated movie-review world, its gold judge (VADER), a
gold cost judge (hype words) and tiny models that `red` trains itself on first use (see
`build.ensure_toy`).

Attributes are imported lazily so that `import red_cli.toy` stays cheap (no torch or
transformers until a build or a judge is needed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from red_cli.toy.settings import ToyConfig

if TYPE_CHECKING:
    from red_cli.toy.build import ToyArtifacts, ensure_toy, format_summary, resolve_toy_path
    from red_cli.toy.cost import GoldCostJudge, gold_costs
    from red_cli.toy.judge import GoldJudge, gold_scores

__all__ = ["PREFIX", "GoldCostJudge", "GoldJudge", "ToyArtifacts", "ToyConfig", "ensure_toy",
           "format_summary", "gold_costs", "gold_scores", "is_toy", "resolve_path",
           "resolve_toy_path"]

_LAZY = {
    "ToyArtifacts": "red_cli.toy.build",
    "ensure_toy": "red_cli.toy.build",
    "format_summary": "red_cli.toy.build",
    "resolve_toy_path": "red_cli.toy.build",
    "GoldJudge": "red_cli.toy.judge",
    "gold_scores": "red_cli.toy.judge",
    "GoldCostJudge": "red_cli.toy.cost",
    "gold_costs": "red_cli.toy.cost",
}


PREFIX = "toy:"


def is_toy(path: Any) -> bool:
    """Whether a model, tokenizer or dataset path names an artifact of the embedded task."""
    return isinstance(path, str) and path.startswith(PREFIX)


def resolve_path(path: str, toy_cfg: Any = None) -> str:
    """A `toy:*` name becomes the cached toy artifact (built on first use); others pass through."""
    if not is_toy(path):
        return path
    from red_cli.toy.build import resolve_toy_path

    return str(resolve_toy_path(path, toy_cfg if toy_cfg is not None else ToyConfig()))


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'red_cli.toy' has no attribute {name!r}")
