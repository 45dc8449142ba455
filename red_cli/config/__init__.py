"""Configuration: where the config tree is, the typed schemas, and the start-up checks.

- ``schema`` / ``schema_eval``: dataclasses for every verb, registered in Hydra's ConfigStore
  by :func:`register_configs`;
- ``checks``: what types cannot express (ranges, divisibility, paths), one message per key.
"""

from __future__ import annotations

import os
import re
from pathlib import Path


def conf_dir() -> Path:
    """The config tree: $RED_CONF_DIR, else `conf/` beside the package (an editable install)."""
    env = os.environ.get("RED_CONF_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "conf"
    if not (path / "train.yaml").is_file():
        raise SystemExit(
            f"red: no config tree at {path} (expected train.yaml there). Install red from its "
            "repository with `pip install -e .`, or point RED_CONF_DIR at a copy of conf/."
        )
    return path


def slug(override_dirname: str) -> str:
    """`_a=1,b=x` for a run directory name: no path separators, bounded length."""
    if not override_dirname:
        return ""
    text = re.sub(r"[^A-Za-z0-9_.,=+-]", "-", override_dirname)
    return "_" + text[:80]


def register_resolvers() -> None:
    """The `${red_slug:...}` resolver the run-directory names use (conf/hydra_red.yaml)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("red_slug"):
        OmegaConf.register_new_resolver("red_slug", slug)


def register_configs() -> None:
    """Every verb's schema in Hydra's ConfigStore (`train_schema`, `eval_schema`, ...)."""
    from hydra.core.config_store import ConfigStore

    from red_cli.config import schema, schema_eval

    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=schema.TrainConfig)
    cs.store(name="toy_verb_schema", node=schema.ToyVerbConfig)
    cs.store(name="eval_schema", node=schema_eval.EvalConfig)
    cs.store(name="report_schema", node=schema_eval.ReportConfig)
    cs.store(name="explain_schema", node=schema_eval.ExplainConfig)
    for name, node in schema_eval.JUDGE_SCHEMAS.items():
        cs.store(group="schema/judge", name=name, node=node)


def load_preset(group: str, name: str, schema: type):
    """``conf/<group>/<name>.yaml`` merged onto ``schema`` (a typo there fails here); a
    ValueError names the valid presets."""
    from omegaconf import OmegaConf

    folder = conf_dir() / group
    presets = sorted(p.stem for p in folder.glob("*.yaml"))
    if name not in presets:
        raise ValueError(f"{group} preset {name!r} does not exist; valid presets: "
                         + ", ".join(presets))
    return OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.load(folder / f"{name}.yaml"))
