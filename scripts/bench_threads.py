"""A single-process toy run's iteration time on a quiet machine and beside one busy process.

    python scripts/bench_threads.py                  # threads=0 (red's default) vs threads=<all>
    python scripts/bench_threads.py --pairs 5 --iterations 12
    python scripts/bench_threads.py --within         # also: the competitor starts mid-run

Each pair is two fresh `red train` runs of the default toy task with the same settings, one
on the quiet machine and one started while a competing process keeps one core busy (a Python
busy loop, started a second before the run and stopped after it); pairs alternate which comes
first. The table reports each setting's median seconds per iteration (the first two
iterations left out: warm-up) and the median of the per-pair ratios shared / quiet.

`threads=0` picks the thread count at start-up from the cores other processes leave free
(red_cli.runtime.choose_threads); `threads=N` fixes it. `--within` runs one longer run per
setting with the competitor switched on and off every few iterations, started quiet: with
`threads=0` the count chosen at start-up stays, so this shows what a competitor that arrives
later costs, and `threads_follow_load=true` re-decides it every iteration.

Run it on an otherwise quiet machine: its own numbers are what it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BUSY = "import time\nt = time.time()\nwhile time.time() - t < 3600:\n    pass\n"


def competitor() -> subprocess.Popen:
    # Dies with this script, even when the script is killed.
    from red_cli.runtime import die_with_parent

    return subprocess.Popen([sys.executable, "-c", BUSY], preexec_fn=die_with_parent)


def run(out: Path, threads: int, iterations: int, busy: bool) -> tuple[float, int]:
    """(median s/iteration after warm-up, threads used) of one fresh run."""
    rival = competitor() if busy else None
    if rival:
        time.sleep(1.0)
    try:
        subprocess.run([sys.executable, "-m", "red_cli", "train", f"threads={threads}",
                        f"ppo.iterations={iterations}", "checkpoint_every=1000",
                        "logger=disabled", "logger.progress_bar=false", f"hydra.run.dir={out}"],
                       cwd=REPO, check=True, capture_output=True, text=True)
    finally:
        if rival:
            rival.kill()
            rival.wait()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    used = next((int(w) for line in (out / "train.log").read_text().splitlines()
                 if "thread(s)" in line for w in [line.split(", ")[-1].split()[0]]), -1)
    return statistics.median(r["time/iteration"] for r in rows[2:]), used


def within(out: Path, setting: str, iterations: int, every: int) -> tuple[float, float]:
    """One run started quiet; the competitor on for `every` iterations, off for `every`, ...
    Returns (median s/it while quiet, while shared), warm-up left out."""
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-m", "red_cli", "train", *setting.split(),
                             f"ppo.iterations={iterations}", "checkpoint_every=1000",
                             "logger=disabled", "logger.progress_bar=false",
                             f"hydra.run.dir={out}"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics, rival, phase = out / "metrics.jsonl", None, {}
    while proc.poll() is None:
        done = len(metrics.read_text().splitlines()) if metrics.exists() else 0
        shared = done >= 2 and (done // every) % 2 == 1
        if shared and rival is None:
            rival = competitor()
        elif not shared and rival is not None:
            rival.kill()
            rival.wait()
            rival = None
        phase.setdefault(done, shared)
        time.sleep(0.05)
    if rival is not None:
        rival.kill()
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    quiet = [r["time/iteration"] for r in rows[2:] if not phase.get(r["iteration"], False)]
    busy = [r["time/iteration"] for r in rows[2:] if phase.get(r["iteration"], False)]
    return statistics.median(quiet), statistics.median(busy)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--within", action="store_true")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    settings = [0, cores]
    print(f"{cores} cores; {args.pairs} pairs per setting, {args.iterations} iterations per run "
          "(the default toy task: batch 64 x 24 new tokens)\n")
    results: dict[int, dict[str, list]] = {t: {"quiet": [], "shared": [], "used": []}
                                           for t in settings}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.pairs):
            for threads in settings:
                order = [False, True] if k % 2 == 0 else [True, False]
                for busy in order:
                    out = Path(tmp) / f"t{threads}_p{k}_{'busy' if busy else 'quiet'}"
                    seconds, used = run(out, threads, args.iterations, busy)
                    results[threads]["shared" if busy else "quiet"].append(seconds)
                    results[threads]["used"].append(("shared" if busy else "quiet", used))
                    print(f"  pair {k} threads={threads} {'shared' if busy else 'quiet '}: "
                          f"{seconds:.3f} s/it ({used} thread(s))", flush=True)
        print("\n| threads | quiet s/it | shared s/it | shared / quiet (paired median) "
              "| threads used quiet / shared |")
        print("|---|---|---|---|---|")
        for threads in settings:
            r = results[threads]
            ratio = statistics.median(s / q for q, s in zip(r["quiet"], r["shared"]))
            used_q = sorted({u for w, u in r["used"] if w == "quiet"})
            used_s = sorted({u for w, u in r["used"] if w == "shared"})
            name = f"{threads} (default: auto)" if threads == 0 else f"{threads} (all cores)"
            print(f"| {name} | {statistics.median(r['quiet']):.3f} | "
                  f"{statistics.median(r['shared']):.3f} | {ratio:.2f} | {used_q} / {used_s} |")
        if args.within:
            print("\nOne run each, started quiet, the competitor on and off every 3 iterations:")
            print("| setting | quiet s/it | shared s/it | shared / quiet |")
            print("|---|---|---|---|")
            for k, setting in enumerate(["threads=0", "threads=0 threads_follow_load=true",
                                         f"threads={cores}"]):
                q, s = within(Path(tmp) / f"within_{k}", setting, 4 * args.iterations, 3)
                print(f"| {setting} | {q:.3f} | {s:.3f} | {s / q:.2f} |", flush=True)


if __name__ == "__main__":
    main()
