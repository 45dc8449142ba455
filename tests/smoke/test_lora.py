"""LoRA end to end on the reduced toy world: only adapters (and the critic's head) train, the
merged final policy is the SFT policy plus the adapters' low-rank update and loads for
`red eval`, a resumed run restores adapters and optimiser exactly; ZeRO-3 on two ranks."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from red_cli import runs
from red_cli.cli import main
from red_cli.runs import read_metrics
from tests.smoke.conftest import QUICK, compose_train, red

LORA = ["policy.lora.r=4", "policy.lora.alpha=8"]
NONDETERMINISTIC = ("time/", "throughput/")


def _comparable(metrics):
    return [{k: v for k, v in m.items() if not k.startswith(NONDETERMINISTIC)} for m in metrics]


def _assert_moved_only_through_adapters(sft_dir, ckpt, r=4, alpha=8):
    """final_policy == SFT except the adapted weights, which moved by exactly alpha/r * B A."""
    sft = load_file(str(sft_dir / "model.safetensors"))
    final = load_file(str(ckpt / "final_policy" / "model.safetensors"))
    adapter = load_file(str(ckpt / "final_adapter" / "adapter_model.safetensors"))
    assert set(final) == set(sft)
    adapted = {k.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
               for k in adapter if ".lora_A." in k}
    assert adapted and adapted <= set(sft)
    for key in sft:
        if key not in adapted:
            assert torch.equal(final[key], sft[key]), f"{key} moved without an adapter"
            continue
        stem = "base_model.model." + key.removesuffix(".weight")
        a, b = adapter[f"{stem}.lora_A.weight"], adapter[f"{stem}.lora_B.weight"]
        assert b.abs().max() > 0, f"{key}: the adapter did not train"
        # GPT-2's Conv1D stores weights as [in, out]: the update is (B A)^T.
        torch.testing.assert_close(final[key] - sft[key], (alpha / r) * (b @ a).T,
                                   atol=1e-6, rtol=1e-4)


def _trainable_saved(ckpt_dir, name):
    """The keys DeepSpeed saved for an engine: its trainable parameters (frozen ones excluded)."""
    state = torch.load(ckpt_dir / name / "mp_rank_00_model_states.pt", weights_only=False)
    return state["module"]


def test_lora_run_trains_adapters_resumes_and_evals(tiny_toy, tmp_path):
    from red_cli.train.loop import train

    run = tmp_path / "run"
    cfg = compose_train([*QUICK, *LORA, "ppo.iterations=3", "checkpoint_every=1"], run)
    runs.create(run, cfg, [])
    train(cfg, run)
    ckpt = run / "checkpoints"
    _assert_moved_only_through_adapters(tiny_toy.policy, ckpt)

    # The engines hold (and checkpoints store) adapters only, plus the critic's value head.
    last = ckpt / (ckpt / "latest").read_text().strip()
    policy_keys = {k for k in _trainable_saved(last, "policy") if ".lora_" not in k}
    # GPT-2's output layer is the input embedding (tied); DeepSpeed's frozen filter walks
    # unique parameters and keeps the alias.
    assert policy_keys <= {"base_model.model.lm_head.weight"}, policy_keys
    critic = _trainable_saved(last, "critic")
    others = {k for k in critic if ".lora_" not in k}
    assert others and all(k.startswith("head.") for k in others), others
    assert any(".lora_B." in k and v.abs().max() > 0 for k, v in critic.items())

    # Resume after iteration 1: the last iteration and the adapters come out identical.
    straight = _comparable(read_metrics(run / "metrics.jsonl"))
    adapter = load_file(str(ckpt / "final_adapter" / "adapter_model.safetensors"))
    (ckpt / "latest").write_text("iter_1\n")
    shutil.rmtree(ckpt / "final_adapter")
    shutil.rmtree(ckpt / "final_policy")
    runs.write_status(run, "running")
    train(cfg, run, resume=True)
    assert _comparable(read_metrics(run / "metrics.jsonl")) == straight
    again = load_file(str(ckpt / "final_adapter" / "adapter_model.safetensors"))
    assert all(torch.equal(again[k], adapter[k]) for k in adapter)

    # The merged policy is a plain folder `red eval` loads.
    main(["eval", str(run), "judge=gold", "prompts.n=4", "batch_size=4",
          "sampling.max_new_tokens=8", "bootstrap_samples=200"])
    result = json.loads((run / "eval" / "gold_vs_sft" / "eval.json").read_text())
    assert result["n"] == 4


# ZeRO-3 on two ranks is in the default run (test_distributed_resume.py); with LoRA on top
# it is ~35 s more, so it runs with `-m slow`.
@pytest.mark.slow
def test_lora_zero3_two_ranks(tiny_toy, tmp_path):
    """ZeRO-3 over two CPU ranks, with LoRA and gradient checkpointing: weights gathered for
    generation, ranks in sync, the final policy consolidated from both partitions."""
    red("train", *QUICK, *LORA, "deepspeed=zero3", "launcher.nproc_per_node=2",
        "policy.gradient_checkpointing=true", "ppo.iterations=2", "hydra.run.dir=run",
        cwd=tmp_path)
    run = tmp_path / "run"
    assert runs.read_status(run) == "complete"
    sums = json.loads((run / "rank_checksums.json").read_text())
    for name in ("policy", "critic"):
        assert len(sums[name]) == 2 and sums[name][0] == sums[name][1], sums
    assert len(read_metrics(run / "metrics.jsonl")) == 2
    _assert_moved_only_through_adapters(tiny_toy.policy, run / "checkpoints")
