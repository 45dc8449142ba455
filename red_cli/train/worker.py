"""One rank of a multi-process run, started by `red train launcher.nproc_per_node=N`.

It reads the config frozen in the run directory (never Hydra, never `${now:...}`), so every
rank trains the same experiment into the same directory. Rank 0 records the outcome in
run.json and says it in one line; a mistake the user can fix is never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from red_cli import runs, runtime


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m red_cli.train.worker")
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format="%(message)s")
    # torchrun's agent may die without stopping us (SIGKILL): go with it.
    runtime.die_with_parent()

    cfg = runs.load_frozen(args.run_dir)
    # Before anything imports deepspeed: it picks its accelerator at import time.
    runtime.prepare_env(cfg.device)
    if rank == 0:
        runtime.log_to_file(args.run_dir / "train.log")
    from red_cli.errors import Interrupted, UserError
    from red_cli.train import distributed
    from red_cli.train.loop import train

    # Ctrl-C reaches the launcher only; it asks for a stop through this file.
    stop = runtime.StopRequest(stop_file=os.environ.get("RED_STOP_FILE"))

    def work():
        try:
            train(cfg, args.run_dir, resume=args.resume, stop=stop)
        finally:
            distributed.teardown()

    try:
        if rank == 0:
            runs.run_guarded(args.run_dir, work)
        else:
            work()
    except (UserError, FileNotFoundError) as err:
        if rank == 0:
            sys.stderr.write(f"red train (rank 0): {err}\n")
        raise SystemExit(3 if isinstance(err, Interrupted) else 2) from None


if __name__ == "__main__":
    main()
