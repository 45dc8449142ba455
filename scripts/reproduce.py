"""Reproduce the papers' claim in miniature: sparse / td / abc / uniform x seeds on the toy task.

    python scripts/reproduce.py                       # 4 modes x 5 seeds, ~45 min on 2 cores
    python scripts/reproduce.py --seeds 2 --out outputs/repro_small ppo.iterations=40

Steps (each skips what an earlier, interrupted invocation already finished):
  1. `red toy`: build the toy world once (cached under $RED_CACHE).
  2. `red train experiment=reproduce redistribution=M seed=S` for every mode and seed, into
     OUT/<i>_<M>_seed<S>; `--jobs` runs at once, each with cores/jobs torch
     threads (2 single-threaded runs use 2 cores better than one run with 2 threads).
     Sequentially, the same sweep is
       red train -m experiment=reproduce redistribution=sparse,td,abc,uniform seed=0,1,2,3,4
  3. `red eval RUN judge=gold prompts.n=N`: each trained policy vs its SFT policy.
  4. `red report OUT threshold_group=sparse threshold_metric=gold smooth=S final_window=S`:
     table.md / table.csv / curves.png in OUT, including the iterations each mode needs
     until its smoothed gold reaches sparse's final gold.
Extra arguments are passed to every `red train` as overrides.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runs import gold_eval, red, run_steps, status, threads_per_job  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="outputs/reproduce")
    ap.add_argument("--modes", default="sparse,td,abc,uniform")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--eval-prompts", type=int, default=300)
    ap.add_argument("--smooth", type=int, default=5)
    ap.add_argument("overrides", nargs="*", help="extra `red train` overrides")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    threads = threads_per_job(args.jobs)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    red("toy", *[o for o in args.overrides if o.startswith("toy")])
    timings["toy world"] = time.perf_counter() - t0

    jobs = []
    for i, (mode, seed) in enumerate((m, s) for m in args.modes.split(",")
                                     for s in range(args.seeds)):
        jobs.append((out / f"{i:02d}_{mode}_seed{seed}", mode, seed))

    def train(job) -> None:
        run, mode, seed = job
        if status(run) == "complete":
            return
        t = time.perf_counter()
        # A half-written run from an interrupted invocation is continued, not restarted.
        resume = [f"resume={run}"] if (run / "checkpoints" / "latest").exists() else []
        if run.exists() and not resume:
            shutil.rmtree(run)  # killed before its first checkpoint: start it again
        red("train", "experiment=reproduce", f"redistribution={mode}", f"seed={seed}",
            *args.overrides, *resume, f"hydra.run.dir={run}", threads=threads,
            log=out / f"train_{run.name}.log")
        print(f"  trained {run.name} in {time.perf_counter() - t:.0f} s", flush=True)

    def evaluate(job) -> None:
        run = job[0]
        gold_eval(run, args.eval_prompts, threads, out / f"eval_{run.name}.log")

    run_steps((("train", train), ("eval", evaluate)), jobs, args.jobs, timings)

    t0 = time.perf_counter()
    red("report", str(out), "threshold_group=sparse", "threshold_metric=gold",
        f"smooth={args.smooth}", f"final_window={args.smooth}")
    timings["report"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    (out / "timings.json").write_text(json.dumps(timings, indent=1) + "\n")
    print("wall seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))


if __name__ == "__main__":
    main()
