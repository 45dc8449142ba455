"""An evaluation's fingerprint names the generation backend that sampled, `auto` resolved: an
evaluation sampled by hf (made before backends existed, or by `auto` on CPU) keeps the
fingerprint it always had, so it resumes."""

from __future__ import annotations

from hydra import compose, initialize_config_dir

from red_cli.config import conf_dir, register_configs, register_resolvers
from red_cli.eval.sides import PolicySpec
from red_cli.eval.store import fingerprint
from red_cli.generation import Sampling


def _cfg(*overrides):
    register_resolvers()
    register_configs()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3", job_name="t"):
        return compose("eval", overrides=["run=/tmp/nowhere", *overrides])


def _fp(cfg, backend):
    spec = PolicySpec("cand", "/tmp/cand", "/tmp/cand")
    return fingerprint(cfg, spec, spec, {"path": "p", "n": 4}, Sampling(8), backend=backend)


def test_hf_sampling_keeps_the_old_fingerprint():
    auto, hf = _cfg(), _cfg("generation=hf")
    assert auto.generation.backend == "auto"
    assert "generation" not in _fp(auto, "hf") and _fp(auto, "hf") == _fp(hf, "hf")


def test_another_backend_is_recorded_as_it_ran():
    got = _fp(_cfg(), "static")["generation"]
    assert got["backend"] == "static" and got["static"]["prompt_bucket"] == 16
    assert _fp(_cfg("generation.static.prompt_bucket=32"), "static") != _fp(_cfg(), "static")
