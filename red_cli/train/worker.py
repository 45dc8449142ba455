"""One rank of a multi-process run, started by `red train launcher.nproc_per_node=N`.

It reads the config frozen in the run directory (never Hydra, never `${now:...}`), so every
rank trains the same experiment into the same directory.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from red_cli import runs, runtime


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m red_cli.train.worker")
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format="%(message)s")

    cfg = runs.load_frozen(args.run_dir)
    # Before anything imports deepspeed: it picks its accelerator at import time.
    runtime.prepare_env(cfg.device)
    from red_cli.train import distributed
    from red_cli.train.loop import train

    def work():
        try:
            train(cfg, args.run_dir, resume=args.resume)
        finally:
            distributed.teardown()

    if rank == 0:
        runs.run_guarded(args.run_dir, work)
    else:
        work()


if __name__ == "__main__":
    main()
