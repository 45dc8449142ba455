"""Every option of every config group composes against its schema and passes start-up checks."""

from __future__ import annotations

from dataclasses import fields

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from red_cli.config import conf_dir, register_configs, register_resolvers
from red_cli.config.checks import validate_train
from red_cli.errors import ConfigError

CONF = conf_dir()
# conf/hydra/ holds Hydra's own groups (launcher presets): tests/smoke/test_cluster_launch.py.
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra")
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
    register_resolvers()
    register_configs()
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


def test_the_toy_cost_model_needs_the_safety_world(hydra_ctx):
    with pytest.raises(ConfigError, match="toy=safe"):
        validate_train(_compose(["cost_model=toy"]))


def test_every_group_has_options():
    assert set(GROUPS) >= {"policy", "reward_model", "dataset", "redistribution", "ppo",
                           "deepspeed", "logger", "launcher", "experiment", "toy"}
    for group in GROUPS:
        assert _options(group), f"conf/{group}/ has no options"


# Options that are valid only with another choice (the toy cost model lives in the toy
# safety world).
COMPANIONS = {("cost_model", "toy"): ["toy=safe"]}


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_option_composes_and_validates(hydra_ctx, group, option):
    key = f"{group}={option}"
    verb = _verb_of(group)
    cfg = _compose([key, *COMPANIONS.get((group, option), [])], verb)
    if verb == "train":
        # A cluster launcher preset multiplies the ranks; the toy batch sizes do not divide
        # by 16 (that check is the user's, with their own ppo sizes).
        validate_train(cfg, world_size=1 if group == "launcher" else None)
    if group != "experiment":
        # The option's own keys survive composition (nothing silently dropped).
        own = OmegaConf.load(CONF / group / f"{option}.yaml")
        for k in own:
            if k != "defaults":
                assert k in cfg[group], f"{group}/{option}.yaml key {k} missing after compose"


def test_every_mode_keeps_its_knobs_under_its_name(hydra_ctx):
    from red_cli.modes import registry

    cfg = _compose(["redistribution=abc"])
    assert cfg.redistribution.mode == "abc" and cfg.redistribution.abc.beta == 0.8
    assert set(registry()) <= set(cfg.redistribution)
    # Another mode's knob composes (an experiment may set every mode's knobs) ...
    assert _compose(["redistribution=td", "redistribution.abc.beta=0.5"]).redistribution.abc.beta == 0.5
    # ... but a knob no mode has, or one at the old flat place, is a typo.
    for typo in ("redistribution.beta=0.5", "redistribution.abc.beta_c=0.5",
                 "redistribution.td.beta=0.5"):
        with pytest.raises(ConfigCompositionException):
            _compose(["redistribution=abc", typo])


def test_every_mode_has_a_yaml_selecting_it():
    from red_cli.modes import registry

    assert set(_options("redistribution")) == set(registry())
    for name in registry():
        assert OmegaConf.load(CONF / "redistribution" / f"{name}.yaml").mode == name


@pytest.mark.parametrize("experiment", _options("experiment"))
@pytest.mark.parametrize("mode", _options("redistribution"))
def test_every_experiment_composes_with_every_mode(hydra_ctx, experiment, mode):
    """`red train -m experiment=X redistribution=a,b,c`: the command line picks the mode, the
    experiment's knobs for each mode stay where that mode reads them."""
    cfg = _compose([f"experiment={experiment}", f"redistribution={mode}"])
    assert cfg.redistribution.mode == mode
    validate_train(cfg, world_size=1)


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
    ("redistribution.td.first_token=prompt", "redistribution.td.first_token"),
    ("ppo.estimator=vtrace", "ppo.estimator"),
    ("policy.lora.r=-1", "policy.lora.r"),
    ("policy.lora.target_modules=[all-linear,c_fc]", "policy.lora.target_modules"),
    ("generation.backend=vllm", "generation.backend"),
    ("generation.static.compile=yes", "generation.static.compile"),
    ("generation.static.prompt_bucket=0", "generation.static.prompt_bucket"),
    ("generation.static.stop_check_every=-2", "generation.static.stop_check_every"),
])
def test_range_checks_name_the_key(hydra_ctx, override, key):
    cfg = _compose([override])
    if key is None:
        validate_train(cfg)
        return
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_train(cfg)


def test_sequence_level_estimators_need_groups_and_refuse_dense_modes(hydra_ctx):
    with pytest.raises(ConfigError, match=r"ppo\.samples_per_prompt=1: ppo.estimator=rloo"):
        validate_train(_compose(["redistribution=sparse", "ppo.estimator=rloo"]))
    with pytest.raises(ConfigError, match="redistribution=td with ppo.estimator=grpo: a "
                                          "sequence-level baseline"):
        validate_train(_compose(["redistribution=td", "ppo.estimator=grpo",
                                 "ppo.samples_per_prompt=4"]))
    with pytest.raises(ConfigError, match="ranks x ppo.samples_per_prompt"):
        validate_train(_compose(["redistribution=sparse", "ppo.estimator=rloo",
                                 "ppo.samples_per_prompt=3"]))
    validate_train(_compose(["redistribution=sparse", "ppo.estimator=grpo",
                             "ppo.samples_per_prompt=4"]))
    validate_train(_compose(["redistribution=td", "ppo.estimator=reinforce_pp"]))


def test_abc_beta_range(hydra_ctx):
    with pytest.raises(ConfigError, match=r"redistribution\.abc\.beta=1\.5: must be in \[0, 1\]"):
        validate_train(_compose(["redistribution=abc", "redistribution.abc.beta=1.5"]))
    # The knobs of a mode not in use are not checked.
    validate_train(_compose(["redistribution=td", "redistribution.abc.beta=1.5"]))


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


@pytest.mark.parametrize("override,key", [("policy.path=/no/such/model", "policy.path"),
                                          ("dataset.path=./missing.jsonl", "dataset.path")])
def test_missing_local_paths_are_config_errors(hydra_ctx, override, key):
    from red_cli.config.checks import check_paths

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_paths(_compose([override]))


def test_hub_ids_are_not_checked_as_paths(hydra_ctx):
    from red_cli.config.checks import check_paths

    check_paths(_compose(["policy.path=meta-llama/Llama-3.1-8B", "dataset.path=imdb"]))


@pytest.mark.parametrize("experiment,groups", [
    ("abc_imdb", {"policy": "gpt2_imdb", "reward_model": "distilbert_imdb", "dataset": "imdb",
                  "redistribution": "abc"}),
    ("abc_tldr", {"policy": "pythia_1b_tldr_sft", "reward_model": "pythia_1b_tldr",
                  "dataset": "tldr", "redistribution": "abc"}),
    ("red_nectar", {"policy": "llama3_8b_instruct", "reward_model": "skywork_llama3_8b",
                    "dataset": "nectar", "redistribution": "td"}),
    ("red_tldr", {"policy": "pythia_1b_tldr_sft", "reward_model": "pythia_1b_tldr",
                  "dataset": "tldr", "redistribution": "td"}),
])
def test_paper_experiments_pick_their_presets(hydra_ctx, experiment, groups):
    cfg = compose("train", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    assert cfg.experiment == experiment
    for group, option in groups.items():
        assert cfg.hydra.runtime.choices[group] == option, group
    assert cfg.redistribution.mode == groups["redistribution"]
    # PAPERS.md: the numbers each paper states.
    if experiment.startswith("abc"):
        assert cfg.redistribution.abc.beta == 0.8
        assert (cfg.ppo.learning_rate, cfg.ppo.rollout_batch_size, cfg.ppo.ppo_epochs) == (1.41e-5, 16, 4)
        assert (cfg.ppo.adaptive_kl, cfg.ppo.kl_coef, cfg.ppo.kl_target, cfg.ppo.kl_horizon) == (
            True, 0.2, 6.0, 10000)
        assert (cfg.ppo.vf_coef, cfg.ppo.cliprange, cfg.ppo.cliprange_value) == (0.1, 0.2, 0.2)
    else:
        assert cfg.redistribution.td.beta_c == 1.0
        assert (cfg.ppo.kl_coef, cfg.ppo.adaptive_kl, cfg.ppo.learning_rate,
                cfg.ppo.critic_learning_rate, cfg.ppo.critic_weight_decay) == (0.02, False, 1e-5, 5e-6, 0.0)
    assert (cfg.ppo.gamma, cfg.ppo.gae_lambda) == (1.0, 0.95)


def test_command_line_beats_the_experiment(hydra_ctx):
    cfg = _compose(["experiment=red_nectar", "policy=qwen2_5_7b_instruct", "dataset.path=./x.jsonl",
                    "ppo.kl_coef=0.05"])
    qwen = OmegaConf.load(CONF / "policy" / "qwen2_5_7b_instruct.yaml")
    assert cfg.policy.path == qwen.path and cfg.ppo.kl_coef == 0.05
    # The eval split follows a local dataset file instead of reaching for the hub.
    assert cfg.dataset.eval_path == "./x.jsonl"


def test_imdb_reward_is_positive_minus_negative(hydra_ctx):
    assert list(_compose(["reward_model=distilbert_imdb"]).reward_model.label_weights) == [-1.0, 1.0]


def test_names_the_checks_list_match_their_registries():
    from red_cli.config.checks import DATASET_ADAPTERS, ESTIMATORS
    from red_cli.data.adapters import ADAPTERS
    from red_cli.train.estimators import ESTIMATORS as BUILT

    assert tuple(ADAPTERS) == DATASET_ADAPTERS
    assert tuple(BUILT) == ESTIMATORS


@pytest.mark.parametrize("override,key", [
    ("dataset.adapter=squad", "dataset.adapter"),
    ("dataset.prefix_words=[5,2]", "dataset.prefix_words"),
    ("dataset.prompt_template=Q:", "dataset.prompt_template"),
    ("dataset.max_prompt_chars=0", "dataset.max_prompt_chars"),
    ("reward_model.label_weights=[]", "reward_model.label_weights"),
])
def test_dataset_and_label_checks_name_the_key(hydra_ctx, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
        validate_train(_compose([override]))
    if key == "dataset.adapter":
        assert "imdb, hh_rlhf, tldr, nectar, pku_saferlhf" in str(err.value)


def test_several_nodes_need_deepspeed_runner_and_hostfile(hydra_ctx, tmp_path):
    with pytest.raises(ConfigError, match="launcher.nnodes=2: several nodes need"):
        validate_train(_compose(["launcher.nnodes=2"]))
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node-01 slots=8\nnode-02 slots=8\n")
    validate_train(_compose(["launcher=hostfile", f"launcher.hostfile={hostfile}",
                             "launcher.master_addr=node-01", "ppo.rollout_batch_size=64",
                             "ppo.mini_batch_size=32", "ppo.micro_batch_size=2"]))
