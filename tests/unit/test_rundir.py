"""A run directory written by an older `red` (fewer schema keys) still loads for resume/eval."""

from __future__ import annotations

from omegaconf import OmegaConf

from red_cli.rundir import load_frozen
from tests.smoke.conftest import QUICK, compose_train


def test_load_frozen_fills_keys_added_since(tmp_path):
    cfg = compose_train([*QUICK, "redistribution=abc", "ppo.kl_coef=0.3"], tmp_path)
    old = OmegaConf.to_container(cfg)
    del old["policy"]["lora"], old["dataset"]["adapter"], old["reward_model"]["label_weights"]
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(old))
    loaded = load_frozen(tmp_path)
    assert loaded.policy.lora.r == 0 and loaded.dataset.adapter == "column"
    assert loaded.reward_model.label_weights is None
    # What the run had is kept as it was.
    assert loaded.ppo.kl_coef == 0.3 and loaded.redistribution.beta == 0.8
    assert OmegaConf.to_container(loaded) == OmegaConf.to_container(cfg)
