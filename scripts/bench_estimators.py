"""Seconds per iteration of each advantage estimator on the default toy task, side by side.

    python scripts/bench_estimators.py                       # gae vs reinforce_pp, td
    python scripts/bench_estimators.py --estimators gae,reinforce_pp,rloo,grpo --mode sparse

Each round runs one fresh `red train` per estimator (the default toy task, `red`'s default
threads), in an order rotated every round; the
table gives each one's median seconds per iteration (the first two iterations left out) and
the median over rounds of its ratio to the first estimator's time in the same round. rloo and
grpo sample `--samples` responses per prompt (the rollout keeps its 64 responses).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(out: Path, estimator: str, mode: str, iterations: int, samples: int) -> dict:
    k = samples if estimator in ("rloo", "grpo") else 1
    subprocess.run([sys.executable, "-m", "red_cli", "train", f"ppo.estimator={estimator}",
                    f"redistribution={mode}", f"ppo.samples_per_prompt={k}",
                    f"ppo.iterations={iterations}", "checkpoint_every=1000", "logger=disabled",
                    "logger.progress_bar=false", f"hydra.run.dir={out}"],
                   cwd=REPO, check=True, capture_output=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][2:]
    return {key: statistics.median(r[key] for r in rows)
            for key in ("time/iteration", "time/forward", "time/update")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--estimators", default="gae,reinforce_pp")
    ap.add_argument("--mode", default="td")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--samples", type=int, default=4)
    args = ap.parse_args()
    names = args.estimators.split(",")
    times: dict[str, list[dict]] = {n: [] for n in names}
    ratios: dict[str, list[float]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            got = {n: run(Path(tmp) / f"{n}_{r}", n, args.mode, args.iterations, args.samples)
                   for n in order}
            for n in names:
                times[n].append(got[n])
                ratios[n].append(got[n]["time/iteration"] / got[names[0]]["time/iteration"])
            print(f"  round {r}: " + ", ".join(f"{n} {got[n]['time/iteration']:.3f} s/it"
                                                for n in names), flush=True)
    print(f"\nredistribution={args.mode}, {args.rounds} rounds x {args.iterations} iterations, "
          "the default toy task (64 responses x 24 new tokens)\n")
    print(f"| estimator | s/iteration | forwards s | update s | vs {names[0]} (paired median) |")
    print("|---|---|---|---|---|")
    for n in names:
        med = {k: statistics.median(t[k] for t in times[n]) for k in times[n][0]}
        print(f"| {n} | {med['time/iteration']:.3f} | {med['time/forward']:.3f} | "
              f"{med['time/update']:.3f} | {statistics.median(ratios[n]):.3f} |")


if __name__ == "__main__":
    main()
