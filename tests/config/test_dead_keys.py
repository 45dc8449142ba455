"""Every key of every verb's schema is read by the code, by its qualified path.

The check is static: each module's attribute chains (``cfg.ppo.cliprange``, ``p.cliprange``
after ``p = cfg.ppo``, ``ds.get("eval_split")``, ``getattr(p, key)`` over a literal tuple of
keys) are resolved within their function, then expressed as config paths. A name that stands
for a config node across functions is declared once below (``NODE_NAMES``); the checks in
``red_cli/config`` and the schemas themselves do not count as reads.
"""

from __future__ import annotations

import ast
import typing
from collections.abc import Iterator
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest

from red_cli.config import schema, schema_eval

PACKAGE = Path(schema.__file__).resolve().parents[1]

# Names that hold a config node when they are a function's parameter (or an attribute chain
# such as `rm.cfg`), in every module: name (dotted) -> the node's path. A RewardStack holds
# the reward model's node or the cost model's (both load and read through it).
NODE_NAMES: dict[str, tuple[str, ...] | list[tuple[str, ...]]] = {
    "ppo": ("ppo",), "p": ("ppo",), "ds": ("dataset",), "pol": ("policy",),
    "rm_cfg": [("reward_model",), ("cost_model",)], "rm.cfg": [("reward_model",), ("cost_model",)],
    "gen_cfg": ("generation",), "judge_cfg": ("judge",), "prompts": ("prompts",),
    "sampling": ("sampling",), "launcher": ("launcher",), "red_cfg": ("redistribution",),
    "toy_cfg": ("toy",), "lag": ("ppo", "lagrangian"),
}


def _file_names(path: Path) -> dict[str, tuple[str, ...]]:
    """Names that hold a config node in one file: a mode's or a backend's knobs, the toy
    world's settings, the dataset keys an adapter reads."""
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = rel.parts
    if parts[0] in ("modes", "generation") and len(parts) == 2:
        group = "redistribution" if parts[0] == "modes" else "generation"
        return {"knobs": (group, parts[1])}
    if parts[0] == "toy":
        return {"cfg": ("toy",)}
    if parts == ("data", "adapters"):
        return {"opt": ("dataset",)}
    return {}


def _chain(node: ast.AST, loops: dict[str, list[str]]) -> list[list[str]]:
    """The name chains an expression reads: `a.b["c"].get("d")` -> [[a, b, c, d]]."""
    if isinstance(node, ast.Name):
        return [[node.id]]
    if isinstance(node, ast.Attribute):
        return [c + [node.attr] for c in _chain(node.value, loops)]
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) \
            and isinstance(node.slice.value, str):
        return [c + [node.slice.value] for c in _chain(node.value, loops)]
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Name) \
            and node.slice.id in loops:
        return [c + [k] for c in _chain(node.value, loops) for k in loops[node.slice.id]]
    if isinstance(node, ast.Call) and node.args:
        key = node.args[1] if isinstance(node.func, ast.Name) and node.func.id in (
            "getattr", "hasattr") and len(node.args) > 1 else (
            node.args[0] if isinstance(node.func, ast.Attribute) and node.func.attr == "get"
            else None)
        base = node.args[0] if isinstance(node.func, ast.Name) else (
            node.func.value if isinstance(node.func, ast.Attribute) else None)
        if key is not None and base is not None:
            keys = ([key.value] if isinstance(key, ast.Constant) and isinstance(key.value, str)
                    else loops.get(key.id, []) if isinstance(key, ast.Name) else [])
            return [c + [k] for c in _chain(base, loops) for k in keys]
    return []


def _loop_keys(fn: ast.AST) -> dict[str, list[str]]:
    """`for key in ("a", "b")` (or tuples whose first item is the key): key -> ["a", "b"]."""
    out: dict[str, list[str]] = {}
    for node in ast.walk(fn):
        if isinstance(node, ast.For) and isinstance(node.iter, ast.Tuple | ast.List):
            target = node.target.elts[0] if isinstance(node.target, ast.Tuple) else node.target
            keys = []
            for elt in node.iter.elts:
                first = elt.elts[0] if isinstance(elt, ast.Tuple) else elt
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    keys.append(first.value)
            if isinstance(target, ast.Name) and keys:
                out.setdefault(target.id, []).extend(keys)
    return out


def _reads(path: Path) -> set[tuple[str, ...]]:
    """Config paths read in one module, each chain expressed from every node name in it."""
    tree = ast.parse(path.read_text())
    names = {**NODE_NAMES, **_file_names(path)}
    scopes = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.Lambda)] + [tree]
    out: set[tuple[str, ...]] = set()
    for scope in scopes:
        loops = _loop_keys(scope)
        aliases: dict[str, list[str]] = {}
        for node in ast.walk(scope):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                    and isinstance(node.targets[0], ast.Name):
                chains = _chain(node.value, loops)
                if len(chains) == 1 and len(chains[0]) > 1:
                    aliases[node.targets[0].id] = chains[0]
        for node in ast.walk(scope):
            for chain in _chain(node, loops) if isinstance(node, ast.expr) else []:
                while chain[0] in aliases and aliases[chain[0]][0] != chain[0]:
                    chain = aliases[chain[0]] + chain[1:]
                for i in range(len(chain)):
                    for width in (1, 2):
                        name = ".".join(chain[i:i + width])
                        if name in names and i + width <= len(chain):
                            nodes = names[name]
                            for node_path in nodes if isinstance(nodes, list) else [nodes]:
                                out.add(node_path + tuple(chain[i + width:]))
                    out.add(tuple(chain[i:]))
    return out


def _paths(node: type, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    hints = typing.get_type_hints(node)
    for f in fields(node):
        t = hints[f.name]
        if is_dataclass(t):
            yield from _paths(t, prefix + (f.name,))
        elif node is schema_eval.EvalConfig and f.name == "judge":
            for judge in schema_eval.JUDGE_SCHEMAS.values():
                yield from _paths(judge, prefix + ("judge",))
        else:
            yield prefix + (f.name,)


SCHEMAS = {"train": schema.TrainConfig, "toy": schema.ToyVerbConfig,
           "eval": schema_eval.EvalConfig, "report": schema_eval.ReportConfig,
           "explain": schema_eval.ExplainConfig}


@pytest.fixture(scope="module")
def reads() -> set[tuple[str, ...]]:
    out: set[tuple[str, ...]] = set()
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).parts[0] != "config":
            out |= _reads(path)
    return out


@pytest.mark.parametrize("verb", SCHEMAS)
def test_every_key_is_read_by_its_path(reads, verb):
    dead = sorted(".".join(p) for p in set(_paths(SCHEMAS[verb])) if p not in reads)
    assert not dead, f"{verb}: config keys never read in red_cli (outside red_cli/config): {dead}"


def test_the_check_sees_a_dead_key():
    """The check itself: a key read nowhere, and one read only by its bare name, are dead."""
    tree_reads = _reads(PACKAGE / "train" / "loop.py")
    assert ("ppo", "cliprange") in tree_reads
    assert ("ppo", "no_such_key") not in tree_reads
    # `name` is an attribute of many things (Path.name): only `policy.name` would count.
    assert ("policy", "name") not in tree_reads
