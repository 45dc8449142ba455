"""Reward-model training jobs, run in this process or in one worker process.

The three toy RMs are independent, so the build trains `toy` here and the two others in a
second process (one core each). Their recipe starts with steps on generated-corpus groups
alone, which exist before the policy does, so the worker starts while this process still
trains and samples the policy; the policy-sample groups follow when ready. Each job is
seeded and single-threaded, so its weights do not depend on which process ran it (the
smoke test checks this). The worker streams ("step", name, loss) messages so that the
parent draws every progress bar itself.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# One preference group: the K texts (prompt + response) and their K x K preference matrix.
GroupTexts = tuple[list[str], list[list[float]]]


@dataclass
class RMJob:
    name: str
    out_dir: str
    tokenizer_dir: str
    arch: str  # "gpt2_from_policy" (init_from = the policy dir), "gpt2" or "bert"
    corpus: list[GroupTexts]  # generated-review groups: known before the policy exists
    samples: list[GroupTexts] | None  # policy-sample groups; None: sent to the worker later
    corpus_only_steps: int  # steps on corpus groups alone, before samples join
    steps: int
    groups_per_step: int
    lr: float
    warmup: int
    center_coef: float
    seed: int
    config: dict[str, Any] = field(default_factory=dict)  # GPT2Config / BertConfig kwargs
    init_from: str | None = None


def new_scalar_model(arch: str, config: dict[str, Any], init_from: str | None = None):
    """A sequence classifier with one output: "gpt2_from_policy" (the transformer of the
    policy saved at `init_from`, a fresh scalar head), or "gpt2" / "bert" from scratch with
    `config`. The head's initialisation draws from torch's global generator."""
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        GPT2Config,
        GPT2ForSequenceClassification,
    )

    if arch == "gpt2_from_policy":
        # Transformer weights from the SFT policy, a fresh scalar head (RMs start from SFT).
        return GPT2ForSequenceClassification.from_pretrained(init_from, num_labels=1,
                                                             use_cache=False)
    if arch == "gpt2":
        return GPT2ForSequenceClassification(GPT2Config(**config))
    if arch == "bert":
        return BertForSequenceClassification(BertConfig(**config))
    raise ValueError(f"unknown RM architecture {arch!r}")


def run_rm_job(job: RMJob, on_step: Callable[[float], None],
               fetch_samples: Callable[[], list[GroupTexts]] | None = None) -> dict[str, Any]:
    """Build, train (Bradley-Terry over preference groups) and save one RM + tokenizer.
    `fetch_samples` provides the policy-sample groups when the job has none yet."""
    import torch
    from transformers import AutoTokenizer

    from red_cli.toy.train import train_preference_groups

    wall, cpu = time.perf_counter(), time.process_time()
    torch.manual_seed(job.seed)
    model = new_scalar_model(job.arch, job.config, job.init_from)
    tok = AutoTokenizer.from_pretrained(job.tokenizer_dir)
    limit = model.config.max_position_embeddings

    def encode(groups: list[GroupTexts]):
        return [([ids[:limit] for ids in tok(texts)["input_ids"]], pref) for texts, pref in groups]

    def samples():
        waited = time.perf_counter()
        groups = job.samples if job.samples is not None else fetch_samples()
        nonlocal wall
        wall += time.perf_counter() - waited  # time spent waiting is not training time
        return encode(groups)

    # At most half of the steps on corpus groups alone: every RM sees the policy's samples.
    switch = min(job.corpus_only_steps, job.steps // 2)
    loss = train_preference_groups(
        model, encode(job.corpus), samples, switch, tok.pad_token_id,
        job.steps, job.groups_per_step, job.lr, job.warmup, job.center_coef, job.seed, on_step)
    model.save_pretrained(job.out_dir)
    tok.save_pretrained(job.out_dir)
    return {
        "final_train_loss": loss,
        "params": sum(t.numel() for t in model.parameters()),
        "architecture": type(model).__name__,
        "vocab_size": model.config.vocab_size,
        "train_seconds": time.perf_counter() - wall,
        "cpu_seconds": time.process_time() - cpu,
    }


def _worker_main(conn, num_threads: int) -> None:
    """Receive ("jobs", [RMJob]) then ("samples", groups) when the policy has sampled; send
    ("step", name, loss), ("done", name, result) or ("error", name, traceback)."""
    from red_cli.toy.train import quiet_deterministic_torch

    samples: list[GroupTexts] | None = None

    def fetch_samples() -> list[GroupTexts]:
        nonlocal samples
        if samples is None:
            kind, payload = conn.recv()
            if kind != "samples":
                raise RuntimeError(f"toy build worker: expected samples, got {kind!r}")
            samples = payload
        return samples

    with quiet_deterministic_torch(num_threads):  # also imports torch while the parent works
        try:
            kind, jobs = conn.recv()
        except EOFError:  # the parent went away
            return
        for job in jobs:
            try:
                result = run_rm_job(job, lambda loss, n=job.name: conn.send(("step", n, loss)),
                                    fetch_samples)
            except BaseException:
                with contextlib.suppress(BrokenPipeError, OSError):  # parent may be gone
                    conn.send(("error", job.name, traceback.format_exc()))
                return
            conn.send(("done", job.name, result))
        # Stay until the parent closes the pipe, so that its send of samples no job ended up
        # needing never meets a closed socket.
        with contextlib.suppress(EOFError, OSError):
            while True:
                conn.recv()


class Worker:
    """A child Python process (`python -m red_cli.toy.parallel FD THREADS`) running RMJobs
    sent over a socket pair. A plain subprocess rather than multiprocessing's spawn, which
    re-imports the parent's __main__ (fails for stdin scripts, notebooks, some launchers).
    Start it early so that its imports overlap with the parent's work."""

    def __init__(self, num_threads: int):
        import red_cli

        self.conn, child = multiprocessing.Pipe()
        env = dict(os.environ)
        package_parent = str(Path(red_cli.__path__[0]).parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH"))
                                            if p)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "red_cli.toy.parallel", str(child.fileno()),
             str(num_threads)],
            pass_fds=[child.fileno()], env=env, stdin=subprocess.DEVNULL,
        )
        child.close()

    @staticmethod
    def available() -> bool:
        return os.name == "posix"  # pass_fds

    def submit(self, jobs: list[RMJob]) -> None:
        self.conn.send(("jobs", jobs))

    def send_samples(self, groups: list[GroupTexts]) -> None:
        self.conn.send(("samples", groups))

    def messages(self, block: bool) -> Iterator[tuple[str, str, Any]]:
        """Pending ("step" | "done", name, payload) messages; raises on a worker error."""
        while block or self.conn.poll():
            block = False
            try:
                kind, name, payload = self.conn.recv()
            except EOFError:
                raise RuntimeError(
                    f"the toy build worker process died (exit code {self.process.poll()})"
                ) from None
            if kind == "error":
                raise RuntimeError(f"training reward model {name!r} failed in the toy build "
                                   f"worker:\n{payload}")
            yield kind, name, payload

    def close(self) -> None:
        self.conn.close()  # the worker sees EOF (or a broken pipe) and exits
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


if __name__ == "__main__":
    _worker_main(multiprocessing.connection.Connection(int(sys.argv[1])), int(sys.argv[2]))
