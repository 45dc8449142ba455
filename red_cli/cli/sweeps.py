"""The end of a `red train -m` sweep: one line naming the points that failed.

Each point of a sweep records its own outcome in its run.json and a failing point does not
stop the others (``red_cli.cli.train``). This Hydra callback runs in the process that started
the sweep, whichever launcher ran the points (local, submitit, SLURM), reads those run.json
files and exits non-zero when any point failed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from red_cli import runs


def failed_points(sweep_dir: Path) -> list[tuple[str, str, str]]:
    """(point folder, status, why) of every point of ``sweep_dir`` that did not complete."""
    out = []
    for point in sorted(p for p in Path(sweep_dir).iterdir() if p.is_dir()) \
            if Path(sweep_dir).is_dir() else []:
        info = runs.read_run_json(point)
        if info and info.get("status") != "complete":
            out.append((point.name, str(info.get("status")), str(info.get("error", ""))))
    return out


def summary_line(sweep_dir: Path, n_points: int, failed: list[tuple[str, str, str]]) -> str:
    names = ", ".join(f"{name} ({status})" for name, status, _ in failed[:6])
    more = f" and {len(failed) - 6} more" if len(failed) > 6 else ""
    return (f"red train: {len(failed)} of {n_points} sweep points did not complete: {names}{more}"
            f" (each one's run.json says why) in {sweep_dir}")


class SweepSummary(Callback):
    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        points = [p for p in sweep_dir.iterdir() if p.is_dir() and (p / "run.json").exists()]
        failed = failed_points(sweep_dir)
        if failed:
            sys.stderr.write(summary_line(sweep_dir, len(points), failed) + "\n")
            raise SystemExit(1)
        if points:
            sys.stdout.write(f"red train: {len(points)} sweep points complete in {sweep_dir}; "
                             f"compare them: red report {sweep_dir}\n")
