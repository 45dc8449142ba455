"""On a CUDA machine: the same end-to-end run on the GPU, in fp32 and bf16 (skipped without one)."""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_train_on_gpu(tiny_toy, tmp_path, precision):
    from red_cli import runs
    from red_cli.runs import read_metrics
    from red_cli.train.loop import train
    from tests.smoke.conftest import QUICK, compose_train

    cfg = compose_train([*QUICK, "device=cuda", f"deepspeed.precision={precision}",
                         "redistribution=abc", "ppo.iterations=2"], tmp_path)
    runs.create(tmp_path, cfg, [])
    train(cfg, tmp_path)
    metrics = read_metrics(tmp_path / "metrics.jsonl")
    assert len(metrics) == 2 and all(m["rewards/sum_minus_score"] < 1e-2 for m in metrics)
