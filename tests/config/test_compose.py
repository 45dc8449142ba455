"""Every option of every config group composes against its schema and passes start-up checks."""

from __future__ import annotations

import ast
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from red_cli import config as schemas
from red_cli.checks import ConfigError, validate_train
from red_cli.cli import _register_resolvers, conf_dir

CONF = conf_dir()
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())
VERB_CONFIGS = sorted(p.stem for p in CONF.glob("*.yaml") if p.stem != "hydra_red")


def _verb_of(group: str) -> str:
    """The verb config whose defaults list selects ``group`` (train for experiment/)."""
    if group == "experiment":
        return "train"
    for verb in ["train", *VERB_CONFIGS]:
        defaults = yaml.safe_load((CONF / f"{verb}.yaml").read_text()).get("defaults", [])
        if any(isinstance(d, dict) and group in d for d in defaults):
            return verb
    raise AssertionError(f"conf/{group}/ is selected by no verb config")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.fixture(scope="module")
def hydra_ctx():
    _register_resolvers()
    schemas.register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3", job_name="test"):
        yield


def _compose(overrides, verb="train"):
    cfg = compose(verb, overrides=overrides)
    if verb == "train":
        # output_dir points at hydra's runtime, which exists only inside an app.
        cfg.output_dir = "/tmp/unused"
    return cfg


@pytest.mark.parametrize("verb", VERB_CONFIGS)
def test_every_verb_config_composes(hydra_ctx, verb):
    # Required keys (???) stay missing; everything else must compose against the schema.
    cfg = _compose([], verb)
    assert cfg is not None


def test_every_group_has_options():
    assert set(GROUPS) >= {"policy", "reward_model", "dataset", "redistribution", "ppo",
                           "deepspeed", "logger", "launcher", "experiment", "toy"}
    for group in GROUPS:
        assert _options(group), f"conf/{group}/ has no options"


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_option_composes_and_validates(hydra_ctx, group, option):
    key = f"+experiment={option}" if group == "experiment" else f"{group}={option}"
    verb = _verb_of(group)
    cfg = _compose([key], verb)
    if verb == "train":
        validate_train(cfg)
    if group != "experiment":
        # The option's own keys survive composition (nothing silently dropped).
        own = OmegaConf.load(CONF / group / f"{option}.yaml")
        for k in own:
            if k != "defaults":
                assert k in cfg[group], f"{group}/{option}.yaml key {k} missing after compose"


def test_redistribution_schemas_are_per_mode(hydra_ctx):
    assert _compose(["redistribution=abc"]).redistribution.beta == 0.8
    with pytest.raises(ConfigCompositionException):
        _compose(["redistribution=td", "redistribution.beta=0.5"])
    with pytest.raises(ConfigCompositionException):
        _compose(["redistribution=abc", "redistribution.beta_c=0.5"])


@pytest.mark.parametrize("override", ["ppo.not_a_key=1", "ppo.cliprange=abc",
                                      "redistribution=nonsense", "policy.nope=1"])
def test_typos_fail_at_compose(hydra_ctx, override):
    with pytest.raises(ConfigCompositionException):
        _compose([override])


@pytest.mark.parametrize("override,key", [
    ("ppo.cliprange=-1", "ppo.cliprange"),
    ("ppo.gae_lambda=1.5", "ppo.gae_lambda"),
    ("ppo.gamma=0", "ppo.gamma"),
    ("redistribution=abc", None),
    ("ppo.mini_batch_size=48", "ppo.rollout_batch_size"),
    ("ppo.kl_estimator=k9", "ppo.kl_estimator"),
    ("deepspeed.zero_stage=4", "deepspeed.zero_stage"),
    ("logger.wandb_mode=cloud", "logger.wandb_mode"),
    ("reward_model.template='{prompt}'", "reward_model.template"),
])
def test_range_checks_name_the_key(hydra_ctx, override, key):
    cfg = _compose([override])
    if key is None:
        validate_train(cfg)
        return
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_train(cfg)


def test_abc_beta_range(hydra_ctx):
    with pytest.raises(ConfigError, match=r"redistribution\.beta="):
        validate_train(_compose(["redistribution=abc", "redistribution.beta=1.5"]))


def test_batch_sizes_must_divide_over_ranks(hydra_ctx):
    cfg = _compose(["launcher.nproc_per_node=3"])
    with pytest.raises(ConfigError, match="number of ranks"):
        validate_train(cfg)


def test_toy_yaml_mirrors_dataclass():
    """conf/toy/default.yaml is where users read the sizes: it must equal the schema defaults
    (regenerate with scripts/sync_toy_conf.py)."""
    from red_cli.toy.settings import ToyConfig

    yaml = OmegaConf.load(CONF / "toy" / "default.yaml")
    assert dict(yaml) == {f.name: getattr(ToyConfig(), f.name) for f in fields(ToyConfig)}


def _schema_fields(node, prefix=""):
    for f in fields(node):
        yield prefix + f.name, f
        if is_dataclass(f.type if not isinstance(f.type, str) else None):
            yield from _schema_fields(f.type, prefix + f.name + ".")


def test_no_dead_keys():
    """Every schema field is read somewhere in red_cli (as an attribute or a literal key)."""
    src = ""
    for path in Path(schemas.__file__).parent.rglob("*.py"):
        if path.name != "config.py":
            src += path.read_text()
    used = {n.attr for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Attribute)}
    used |= {n.value for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Constant)
             and isinstance(n.value, str)}
    dead = []
    for schema in (schemas.PolicyConfig, schemas.RewardModelConfig, schemas.DatasetConfig,
                   schemas.TDConfig, schemas.ABCConfig, schemas.PPOConfig,
                   schemas.DeepSpeedConfig, schemas.LoggerConfig, schemas.LauncherConfig,
                   schemas.TrainConfig, schemas.ToyVerbConfig):
        for f in fields(schema):
            if f.name not in used:
                dead.append(f"{schema.__name__}.{f.name}")
    assert not dead, f"schema fields never read in red_cli: {dead}"


@pytest.mark.parametrize("override,key", [("policy.path=/no/such/model", "policy.path"),
                                          ("dataset.path=./missing.jsonl", "dataset.path")])
def test_missing_local_paths_are_config_errors(hydra_ctx, override, key):
    from red_cli.checks import check_paths

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_paths(_compose([override]))


def test_hub_ids_are_not_checked_as_paths(hydra_ctx):
    from red_cli.checks import check_paths

    check_paths(_compose(["policy.path=meta-llama/Llama-3.1-8B", "dataset.path=imdb"]))
