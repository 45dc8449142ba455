"""ToyConfig as a Hydra node, the cache key, the magic names, and a cheap package import."""

import dataclasses
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from red_cli.toy.build import MAGIC_NAMES, as_toy_config, config_key, resolve_toy_path
from red_cli.toy.settings import ToyConfig


def test_toy_config_is_an_omegaconf_structured_config():
    node = OmegaConf.structured(ToyConfig)
    assert node.max_new_tokens == 24
    assert (node.prompt_min_words, node.prompt_max_words) == (2, 6)
    assert as_toy_config(node) == ToyConfig()
    assert as_toy_config({"seed": 3}) == ToyConfig(seed=3)
    with pytest.raises(ValueError, match="unknown toy setting"):
        as_toy_config({"seeed": 3})


def test_cache_key_depends_on_every_setting():
    base = config_key(ToyConfig())
    assert base == config_key(ToyConfig())
    assert base.startswith("v")
    for field in dataclasses.fields(ToyConfig):
        value = getattr(ToyConfig(), field.name)
        changed = (not value) if isinstance(value, bool) else value + 1
        assert config_key(ToyConfig(**{field.name: changed})) != base, field.name


def test_unknown_magic_name_lists_the_valid_ones_without_building():
    with pytest.raises(ValueError, match="toy:policy") as err:
        resolve_toy_path("toy:critic", ToyConfig())
    for name in MAGIC_NAMES:
        assert name in str(err.value)


def test_importing_the_package_does_not_import_torch():
    code = ("import sys, red_cli.toy, red_cli.toy.build; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_failed_build_leaves_nothing_that_looks_valid(tmp_path, monkeypatch):
    from red_cli.toy import build

    def failing_build(cfg, out, progress):
        (out / "policy").mkdir()
        raise RuntimeError("boom")

    monkeypatch.setattr(build, "_build", failing_build)
    with pytest.raises(RuntimeError, match="boom"):
        build.ensure_toy(ToyConfig(), cache_root=tmp_path, progress=False)
    left = sorted(p.name for p in (tmp_path / "toy").iterdir())
    assert left == [f"{config_key(ToyConfig())}.lock"]


def test_a_folder_without_the_marker_is_rebuilt(tmp_path, monkeypatch):
    from red_cli.toy import build

    def fake_build(cfg, out, progress):
        (out / "policy").mkdir()
        return {"build_seconds": 0.0}

    monkeypatch.setattr(build, "_build", fake_build)
    root = tmp_path / "toy" / config_key(ToyConfig())
    (root / "junk").mkdir(parents=True)  # e.g. copied by hand, no COMPLETE marker
    art = build.ensure_toy(ToyConfig(), cache_root=tmp_path, progress=False)
    assert art.root == root and (root / "COMPLETE").is_file()
    assert not (root / "junk").exists() and (root / "policy").is_dir()
    assert art.summary["paths"]["toy:policy"] == str(root / "policy")
