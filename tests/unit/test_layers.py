"""The package's import direction: no module imports a layer above its own.

Layers, lowest first (README "Layout"). A package may import its own modules and any lower
layer, never a higher one nor another package of its own layer; imports inside functions
count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import red_cli

PACKAGE = Path(red_cli.__file__).resolve().parent
LAYERS = [
    {"errors", "rlhf", "toy"},  # pure maths, the embedded task: nothing else of red_cli
    {"modes", "generation"},  # specs and backends over the maths
    {"config"},  # schemas (built from the mode and backend registries), start-up checks
    {"runtime"},  # the process: device, threads, signals, logs, collectives
    {"models", "data", "runs"},  # models, prompts, run directories
    {"reward"},  # reading a reward model onto policy tokens
    {"train", "eval"},  # the PPO loop; eval / report / explain
    {"cli"},  # the `red` verbs
    {"__main__", "__init__"},  # `python -m red_cli`
]
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}


def _top(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "red_cli" and len(parts) > 1 else None


def _imports(path: Path) -> set[str]:
    """Top-level red_cli packages a module imports (`from red_cli import x` counts as x)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {t for a in node.names if (t := _top(a.name))}
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "red_cli":
                out |= {a.name for a in node.names}
            elif t := _top(node.module):
                out.add(t)
    return out


def test_every_package_has_a_layer():
    found = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" or (p / "__init__.py").exists())}
    assert found == set(LAYER_OF), found ^ set(LAYER_OF)


def test_no_module_imports_upwards_or_sideways():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        for target in _imports(path) - {own}:
            if LAYER_OF[target] >= LAYER_OF[own]:  # a sibling or a layer above
                wrong.append(f"{path.relative_to(PACKAGE)} imports red_cli.{target}")
    assert not wrong, "\n".join(wrong)
