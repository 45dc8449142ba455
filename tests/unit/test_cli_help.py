"""`red <verb> --help` lists that verb's own groups and keys; the naming of run directories."""

from __future__ import annotations

import pytest

from red_cli.cli import VERBS
from red_cli.cli.help import verb_help
from red_cli.config import conf_dir, run_name


def _help(verb: str) -> str:
    return verb_help(verb, VERBS[verb][2], conf_dir())


def _groups(text: str) -> set[str]:
    block = text.split("config groups")[1].split("\n\nkeys")[0]
    return {line.split()[0] for line in block.splitlines()[1:]
            if line.startswith("  ") and not line.startswith("   ")}


def test_train_help_lists_its_groups_only():
    text = _help("train")
    assert _groups(text) == {"policy", "reward_model", "cost_model", "dataset", "redistribution",
                             "generation",
                             "ppo", "deepspeed", "logger", "launcher", "toy", "experiment"}
    assert "judge" not in _groups(text) and "schema" not in text
    assert "[td]" in text and "last_k" in text  # the default marked, every option shown
    assert "shell" not in text.lower()


@pytest.mark.parametrize("verb", ["eval", "explain", "report", "toy"])
def test_other_verbs_do_not_list_training_groups(verb):
    groups = _groups(_help(verb))
    assert not groups & {"ppo", "deepspeed", "launcher", "policy", "reward_model"}
    if verb == "eval":
        assert groups == {"judge", "generation", "toy"}


def test_every_top_level_key_of_each_verb_is_described():
    from dataclasses import fields

    from red_cli.cli.help import KEYS
    from red_cli.config.schema import TrainConfig

    groups = {"policy", "reward_model", "cost_model", "dataset", "redistribution", "generation", "ppo",
              "deepspeed", "logger", "launcher", "toy", "experiment", "output_dir"}
    train_keys = {f.name for f in fields(TrainConfig)} - groups
    assert train_keys <= set(KEYS["train"]), train_keys - set(KEYS["train"])


@pytest.mark.parametrize("mode,seed,overrides,expected", [
    ("td", 0, [], "td_s0"),
    ("abc", 3, ["redistribution=abc", "seed=3", "ppo.kl_coef=0.1"], "abc_s3_kl_coef=0.1"),
    # An ambiguous last part keeps the whole key; resume/logger/hydra keys are left out.
    ("td", 1, ["policy.dtype=bfloat16", "reward_model.dtype=float32", "logger=online",
               "resume=x", "hydra.run.dir=y"],
     "td_s1_policy.dtype=bfloat16,reward_model.dtype=float32"),
])
def test_run_names_put_mode_and_seed_first(mode, seed, overrides, expected):
    assert run_name(mode, seed, overrides) == expected


def test_long_run_names_stay_unique():
    a = run_name("td", 0, [f"ppo.k{i}=1" for i in range(30)])
    b = run_name("td", 0, [f"ppo.k{i}=1" for i in range(30)] + ["ppo.z=2"])
    assert len(a) <= 60 and len(b) <= 60 and a != b and a.startswith("td_s0_")
