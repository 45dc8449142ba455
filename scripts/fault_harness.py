"""Kill a run with SIGKILL at random moments, resume it each time, and check that it ends with
the metrics of the same run left alone.

    python scripts/fault_harness.py                      # 8 kills, the tiny toy world
    python scripts/fault_harness.py --kills 20 --seed 3

A moment is drawn uniformly between 0.5 s and 60% of the time a whole run takes, so kills land in
start-up, rollouts, updates, checkpoint writes, the resume's own start-up and its rewrite of
metrics.jsonl. After each kill the run is resumed (and may be killed again); at the end it
runs to completion and its metrics.jsonl is compared key by key with an uninterrupted run's
(wall-clock keys left out). Prints one line per kill and the verdict; exits 1 on a mismatch.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from same_metrics import differences  # noqa: E402

ARGS = ["toy=tiny", "experiment=toy_quick", "ppo.iterations=40", "checkpoint_every=3",
        "threads=1", "logger=disabled", "logger.progress_bar=false"]


def red(*args: str, cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    return subprocess.Popen([sys.executable, "-m", "red_cli", "train", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.time()
        assert red(*ARGS, "hydra.run.dir=straight", cwd=root).wait() == 0
        whole = time.time() - t0
        print(f"uninterrupted run: {whole:.1f} s")
        proc = red(*ARGS, "hydra.run.dir=killed", cwd=root)
        for k in range(args.kills):
            moment = rng.uniform(0.5, 0.6 * whole)
            time.sleep(moment)
            finished = proc.poll() is not None
            if not finished:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            run = root / "killed"
            latest = (run / "checkpoints" / "latest")
            state = latest.read_text().strip() if latest.exists() else "no checkpoint"
            lines = len((run / "metrics.jsonl").read_text().splitlines()) \
                if (run / "metrics.jsonl").exists() else 0
            print(f"kill {k}: after {moment:.1f} s{' (it had finished)' if finished else ''}; "
                  f"latest {state}, {lines} metric lines", flush=True)
            if finished and proc.returncode == 0:
                break
            first = not (run / "config.yaml").exists()
            proc = red(*ARGS, "hydra.run.dir=killed", cwd=root) if first else \
                red("resume=killed", cwd=root)
        if proc.wait() != 0:
            raise SystemExit(f"the last resume failed: {proc.stderr.read()[-2000:]}")
        diff = differences(root / "straight", root / "killed")
        print("same metrics as the uninterrupted run" if not diff else
              "DIFFERENT:\n  " + "\n  ".join(diff[:10]))
        sys.exit(1 if diff else 0)


if __name__ == "__main__":
    main()
