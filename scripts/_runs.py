"""What the study scripts (reproduce.py, study_credit.py) share: `red` in a child process,
a run's status, and a pool that runs one step over every run, timed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def red(*args: str, threads: int | None = None, log: Path | None = None) -> None:
    """`python -m red_cli ARGS` (this repository's red_cli, in the caller's directory), with
    OMP_NUM_THREADS=threads when given; its output to ``log`` (the last 20 lines raised on
    failure), else to this terminal."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "red_cli", *args]
    if log is None:
        subprocess.run(cmd, check=True, env=env)
        return
    with log.open("w") as out:
        proc = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode:
        tail = log.read_text().splitlines()[-20:]
        raise RuntimeError(f"red {' '.join(args)} failed (see {log}):\n" + "\n".join(tail))


def status(run: Path) -> str | None:
    """A run directory's status (run.json), None when it has none yet."""
    try:
        return json.loads((run / "run.json").read_text())["status"]
    except (OSError, ValueError, KeyError):
        return None


def threads_per_job(jobs: int) -> int:
    """Torch threads for each of ``jobs`` concurrent runs: the cores shared out."""
    return max(1, (os.cpu_count() or 1) // jobs)


def run_steps(steps: Sequence[tuple[str, Callable]], jobs: list, parallel: int,
              timings: dict[str, float]) -> None:
    """Each (name, fn) step over every job, ``parallel`` at a time, one step after the other;
    each step's wall seconds into ``timings[name]``."""
    for name, fn in steps:
        t0 = time.perf_counter()
        print(f"{name}: {len(jobs)} runs, {parallel} at a time, {threads_per_job(parallel)} "
              "torch thread(s) each", flush=True)
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(fn, jobs))
        timings[name] = time.perf_counter() - t0


def gold_eval(run: Path, prompts: int, threads: int, log: Path) -> None:
    """`red eval RUN judge=gold prompts.n=N` (vs its SFT policy), unless already done."""
    if (run / "eval" / "gold_vs_sft" / "eval.json").exists():
        return
    red("eval", str(run), "judge=gold", f"prompts.n={prompts}", threads=threads, log=log)
