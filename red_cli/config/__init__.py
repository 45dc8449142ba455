"""Configuration: where the config tree is, the typed schemas, and the start-up checks.

- ``schema`` / ``schema_eval``: dataclasses for every verb, registered in Hydra's ConfigStore
  by :func:`register_configs`;
- ``checks``: what types cannot express (ranges, divisibility, paths), one message per key.
"""

from __future__ import annotations

import hashlib
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


# Override keys left out of run names: they do not change the experiment.
NAME_EXCLUDED = ("resume", "logger", "launcher.master_port", "hydra", "threads",
                 "checkpoint_every", "sample_every", "redistribution", "seed")
NAME_MAX = 60


def run_name(mode: str, seed, overrides) -> str:
    """A run's short readable name, mode and seed first: ``td_s1_kl_coef=0.1,beta=0.5``.

    The other overrides follow sorted, each key cut to its last part where that stays
    unambiguous among them; a name longer than NAME_MAX keeps its start and gets a hash of
    the whole, so it stays unique. Only filename-safe characters.
    """
    pairs = []
    for item in overrides or []:
        key, eq, value = str(item).lstrip("+~").partition("=")
        if eq and not any(key == k or key.startswith(k + ".") for k in NAME_EXCLUDED):
            pairs.append((key, value))
    pairs.sort()
    lasts = [k.rsplit(".", 1)[-1] for k, _ in pairs]
    rest = ",".join(f"{last if lasts.count(last) == 1 else key}={value}"
                    for (key, value), last in zip(pairs, lasts))
    name = "_".join(part for part in (str(mode or ""), f"s{seed}" if seed != "" else "", rest)
                    if part)
    name = re.sub(r"[^A-Za-z0-9_.,=+-]", "-", name)
    if len(name) > NAME_MAX:
        digest = hashlib.sha1(name.encode()).hexdigest()[:7]
        name = f"{name[:NAME_MAX - 8]}-{digest}"
    return name


def register_resolvers() -> None:
    """The `${red_name:...}` resolver the run-directory names use (conf/hydra_red.yaml)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("red_name"):
        OmegaConf.register_new_resolver("red_name", run_name)


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
