"""Off the happy path, end to end with the real `red` command: a broken reward model, a policy
that only samples padding, Ctrl-C, a sweep with a bad point, and a battery of bad inputs.
Each ends in one clear line (no traceback), never in a run that looks complete, and the
runs that stopped continue with `red train resume=DIR` once the cause is fixed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from red_cli import runs
from red_cli.runs import read_metrics
from tests.smoke.conftest import QUICK, red


def _one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    err = proc.stderr
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in err and "Traceback" not in proc.stdout, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) <= 15, err
    for needle in needles:
        assert needle in err, (needle, err)


def _copy_rm(tiny_toy, dest, edit):
    """The toy RM (and its tokenizer) copied to ``dest`` with its weights edited in place."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    src = tiny_toy.reward_models["toy"]
    model = AutoModelForSequenceClassification.from_pretrained(src)
    with torch.no_grad():
        edit(model)
    model.save_pretrained(dest)
    AutoTokenizer.from_pretrained(src).save_pretrained(dest)
    return dest


def test_nan_reward_model_stops_at_the_start_and_resumes_once_fixed(tiny_toy, tmp_path):
    bad = _copy_rm(tiny_toy, tmp_path / "nan_rm", lambda m: m.score.weight.fill_(float("nan")))
    proc = red("train", *QUICK, f"reward_model.path={bad}", "hydra.run.dir=run", cwd=tmp_path,
               check=False)
    _one_line_error(proc, "reward_model.path", "NaN")
    run = tmp_path / "run"
    assert runs.read_status(run) == "failed"
    assert not (run / "checkpoints" / "latest").exists(), "nothing unsound is saved"
    # Fix the cause (the file), then the same run goes on (from iteration 0: nothing ran).
    shutil.rmtree(bad)
    shutil.copytree(tiny_toy.reward_models["toy"], bad)
    red("train", "resume=run", cwd=tmp_path)
    assert runs.read_status(run) == "complete"
    assert [m["iteration"] for m in read_metrics(run / "metrics.jsonl")] == [0, 1, 2]


def test_infinite_scores_stop_at_iteration_0_with_a_finite_checkpoint(tiny_toy, tmp_path):
    """Finite weights, infinite output: stopped where it appears, before any update; the
    starting weights are the `latest` checkpoint, all finite; fixed, the run resumes."""
    def overflow(m):  # every hidden state ~1e30 and a head of 1e10: finite weights, inf score
        m.transformer.ln_f.bias.fill_(1e30)
        m.score.weight.fill_(1e10)

    bad = _copy_rm(tiny_toy, tmp_path / "inf_rm", overflow)
    args = [*QUICK, "ppo.critic_init=policy", "hydra.run.dir=run"]
    proc = red("train", *args, f"reward_model.path={bad}", cwd=tmp_path, check=False)
    _one_line_error(proc, "objective/score", "iteration 0", "resume=")
    run = tmp_path / "run"
    assert runs.read_status(run) == "failed"
    latest = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    assert latest.name == "iter_-1"
    for path in latest.rglob("*model_states.pt"):
        state = torch.load(path, weights_only=False)["module"]
        assert all(torch.isfinite(v).all() for v in state.values() if torch.is_tensor(v)), path
    # Fix the config (the run's own config.yaml: a resume keeps it), then resume.
    cfg = OmegaConf.load(run / "config.yaml")
    cfg.reward_model.path = str(tiny_toy.reward_models["toy"])
    OmegaConf.save(cfg, run / "config.yaml")
    red("train", "resume=run", cwd=tmp_path)
    assert runs.read_status(run) == "complete"
    assert [m["iteration"] for m in read_metrics(run / "metrics.jsonl")] == [0, 1, 2]


def test_a_policy_that_samples_padding_first_trains_in_every_mode(tiny_toy, tmp_path):
    """pad != eos and the pad token sampled first: the pad ends the response as its only
    token (the RM reads the prompt alone), and every mode trains without a crash."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_toy.policy)
    assert tok.pad_token_id != tok.eos_token_id
    model = AutoModelForCausalLM.from_pretrained(tiny_toy.policy)
    with torch.no_grad():  # every hidden state ~= c, and only the pad row of W points at c
        c = torch.full((model.config.n_embd,), 3.0)
        model.transformer.ln_f.weight.mul_(0.01)
        model.transformer.ln_f.bias.copy_(c)
        model.transformer.wte.weight[tok.pad_token_id] = 10 * c
    model.save_pretrained(tmp_path / "padder")
    tok.save_pretrained(tmp_path / "padder")
    red("train", "-m", *QUICK, f"policy.path={tmp_path / 'padder'}", "ppo.iterations=1",
        "redistribution=sparse,td,abc,uniform,last_k", "hydra.sweep.dir=sweep", cwd=tmp_path)
    points = sorted((tmp_path / "sweep").iterdir())
    assert len([p for p in points if p.is_dir()]) == 5
    for point in (p for p in points if p.is_dir()):
        assert runs.read_status(point) == "complete", point
        [m] = read_metrics(point / "metrics.jsonl")
        assert m["objective/response_length"] == 1.0, point
        assert m["rewards/sum_minus_score"] < 1e-5, point
        assert all(v == v for v in m.values()), point  # no NaN


def test_ctrl_c_finishes_the_iteration_checkpoints_and_resumes_exactly(tiny_toy, tmp_path):
    args = [*QUICK, "ppo.iterations=10", "checkpoint_every=100"]
    red("train", *args, "hydra.run.dir=straight", cwd=tmp_path)
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    proc = subprocess.Popen([sys.executable, "-m", "red_cli", "train", *args,
                             "hydra.run.dir=stopped"], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    metrics = tmp_path / "stopped" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, (out[-2000:], err[-3000:])
    assert "Traceback" not in err and "interrupted after iteration" in err, err[-3000:]
    assert "red train resume=" in err
    run = tmp_path / "stopped"
    info = runs.read_run_json(run)
    assert info["status"] == "interrupted"
    done = len(read_metrics(metrics))
    assert 2 <= done < 10 and runs.last_checkpoint_iteration(run) == done - 1
    red("train", "resume=stopped", cwd=tmp_path)
    keep = ("time/", "throughput/")
    same = [{k: v for k, v in m.items() if not k.startswith(keep)} for m in read_metrics(metrics)]
    want = [{k: v for k, v in m.items() if not k.startswith(keep)}
            for m in read_metrics(tmp_path / "straight" / "metrics.jsonl")]
    assert same == want


def test_a_failing_sweep_point_does_not_stop_the_others(tiny_toy, tmp_path):
    proc = red("train", "-m", *QUICK, "ppo.iterations=1", "ppo.kl_coef=-1,0.1",
               "hydra.sweep.dir=sweep", cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "1 of 2 sweep points did not complete" in proc.stderr
    first, second = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert runs.read_run_json(first)["status"] == "failed"
    assert "ppo.kl_coef" in runs.read_run_json(first)["error"]
    assert runs.read_status(second) == "complete"


def _write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


BAD = [
    (["--redistribution", "abc"], "redistribution=abc"),
    (["redistribution.mode=abc"], "redistribution=abc"),
    (["-sc", "install=bash"], "shell completion"),
    (["launcher.nproc_per_node=0"], "launcher.nproc_per_node"),
    (["ppo.cliprange=-1"], "ppo.cliprange"),
    (["ppo.nope=1"], "ppo.nope"),
    (["hydra.run.dir=/proc/red/x"], "hydra.run.dir"),
    (["policy.path=./no/such/model"], "policy.path"),
    (["resume=nowhere"], "resume=nowhere"),
    (["logger.wandb_mode=online"], "wandb"),
    (["-m", "ppo.nope=1,2", "--cfg", "job"], "ppo.nope"),
    (["ppo.kl_coef=-1", "--cfg", "job"], "ppo.kl_coef"),
    (["dataset.path=EMPTY"], "dataset.path"),
    (["dataset.path=LATIN1"], "UTF-8"),
]


@pytest.mark.parametrize("args,needle", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_train_inputs_end_in_one_line(tiny_toy, tmp_path, monkeypatch, args, needle):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    files = {"EMPTY": _write(tmp_path / "empty.jsonl", b""),
             "LATIN1": _write(tmp_path / "l1.jsonl", '{"prompt": "caf\xe9"}\n'.encode("latin-1"))}
    args = [a.replace("EMPTY", files["EMPTY"]).replace("LATIN1", files["LATIN1"]) for a in args]
    proc = red("train", *QUICK, *args, cwd=tmp_path, check=False)
    _one_line_error(proc, needle)
    left = [p for p in (tmp_path / "outputs").rglob("run.json")] if (tmp_path / "outputs").exists() else []
    for path in left:  # a run directory may stay only to say that it failed
        assert runs.read_status(path.parent) == "failed"


@pytest.mark.parametrize("verb,args,needle", [
    ("eval", ["/no/such/run"], "/no/such/run"),
    ("explain", ["./nope"], "./nope"),
    ("report", ["/no/such/sweep"], "/no/such/sweep"),
    ("toy", ["toy.n_reviews=10"], "toy.n_reviews"),
])
def test_bad_inputs_of_the_other_verbs(tmp_path, verb, args, needle):
    _one_line_error(red(verb, *args, cwd=tmp_path, check=False), needle)
    assert not any(tmp_path.iterdir())


def test_weights_of_the_checkpoint_are_finite_helper_reads_them(tiny_toy):
    """The check above reads DeepSpeed's model-states files: make sure they hold tensors."""
    weights = load_file(str(tiny_toy.policy / "model.safetensors"))
    assert weights and all(torch.isfinite(v).all() for v in weights.values())
