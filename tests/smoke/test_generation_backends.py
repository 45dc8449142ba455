"""`red train` with each generation backend on the reduced toy world: on CPU the static
backend's eager step draws the hf backend's tokens, so the whole run's metrics agree; LoRA
(adapters merged for the rollout) and ZeRO-3 (weights gathered once) keep working; the
start-up line says which backend ran and whether `auto` chose it."""

from __future__ import annotations

import json
import logging

from red_cli import runs
from red_cli.runs import read_metrics
from tests.smoke.conftest import QUICK, compose_train, red

TIMES = ("time/", "throughput/")


def _comparable(metrics):
    return [{k: v for k, v in m.items() if not k.startswith(TIMES)} for m in metrics]


def _train(overrides, run, caplog):
    from red_cli.train.loop import train

    cfg = compose_train([*QUICK, "ppo.iterations=2", *overrides], run)
    runs.create(run, cfg, [])
    with caplog.at_level(logging.INFO, logger="red"):
        train(cfg, run)
    return _comparable(read_metrics(run / "metrics.jsonl"))


def test_static_backend_runs_hf_runs_metrics_on_cpu(tiny_toy, tmp_path, caplog):
    hf = _train(["generation=hf"], tmp_path / "hf", caplog)
    assert "generation hf (transformers generate, dynamic KV cache)," in caplog.text
    caplog.clear()
    static = _train(["generation=static"], tmp_path / "static", caplog)
    assert "generation static (static KV cache, eager decode step)," in caplog.text
    assert static == hf
    caplog.clear()
    _train([], tmp_path / "auto", caplog)  # the default: auto, which is hf on CPU
    assert "generation hf (transformers generate, dynamic KV cache) (auto)," in caplog.text


def test_static_backend_with_lora(tiny_toy, tmp_path, caplog):
    metrics = _train(["generation=static", "policy.lora.r=4", "policy.lora.alpha=8"],
                     tmp_path / "run", caplog)
    assert len(metrics) == 2 and metrics[-1]["objective/response_length"] > 0


def test_static_backend_with_lora_under_zero3_two_ranks(tiny_toy, tmp_path):
    """Weights gathered once per rollout, adapters merged into the gathered weights and the
    originals copied back: the ranks stay in sync."""
    red("train", *QUICK, "generation=static", "policy.lora.r=4", "policy.lora.alpha=8",
        "deepspeed=zero3", "launcher.nproc_per_node=2", "ppo.iterations=2", "hydra.run.dir=run",
        cwd=tmp_path)
    run = tmp_path / "run"
    assert runs.read_status(run) == "complete"
    assert len(read_metrics(run / "metrics.jsonl")) == 2
    sums = json.loads((run / "rank_checksums.json").read_text())
    for name in ("policy", "critic"):
        assert len(sums[name]) == 2 and sums[name][0] == sums[name][1], sums
