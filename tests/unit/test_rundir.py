"""A run directory written by an older `red` (fewer schema keys, the old layout of mode
knobs) still loads for resume/eval."""

from __future__ import annotations

from omegaconf import OmegaConf

from red_cli.runs import load_frozen
from tests.smoke.conftest import QUICK, compose_train


def test_load_frozen_fills_keys_added_since(tmp_path):
    cfg = compose_train([*QUICK, "redistribution=abc", "ppo.kl_coef=0.3",
                         "redistribution.abc.beta=0.6"], tmp_path)
    old = OmegaConf.to_container(cfg)
    del old["policy"]["lora"], old["dataset"]["adapter"], old["reward_model"]["label_weights"]
    del old["generation"], old["ppo"]["estimator"]
    # Before wave 2: one mode's knobs flat under `redistribution`, and names since removed.
    old["redistribution"] = {"mode": "abc", "beta": 0.6}
    old["policy"]["name"] = old["dataset"]["name"] = "toy"
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(old))
    loaded = load_frozen(tmp_path)
    assert loaded.policy.lora.r == 0 and loaded.dataset.adapter == "column"
    assert loaded.reward_model.label_weights is None
    assert loaded.generation.backend == "hf" and loaded.ppo.estimator == "gae"
    # What the run had is kept as it was.
    assert loaded.ppo.kl_coef == 0.3 and loaded.redistribution.abc.beta == 0.6
    assert loaded.redistribution.mode == "abc"
    # Today's default is generation=auto; a run from before backends sampled with hf.
    expected = OmegaConf.to_container(cfg)
    expected["generation"]["backend"] = "hf"
    assert OmegaConf.to_container(loaded) == expected
