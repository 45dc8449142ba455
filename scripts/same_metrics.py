"""Whether runs logged the same numbers: metrics.jsonl of run directories compared key by key,
the wall-clock ones (time/*, throughput/*, system/*) left out.

    python scripts/same_metrics.py RUN_A RUN_B               # one pair
    python scripts/same_metrics.py --pairs BEFORE AFTER      # every run folder of BEFORE
                                                             # against AFTER's of the same name
Exits 1 when anything differs, printing the first differences.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

CLOCKS = ("time/", "throughput/", "system/")


def rows(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if not k.startswith(CLOCKS)}
            for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def differences(a: Path, b: Path) -> list[str]:
    ra, rb = rows(a), rows(b)
    out = [f"{len(ra)} vs {len(rb)} iterations"] if len(ra) != len(rb) else []
    for x, y in zip(ra, rb):
        for key in sorted(set(x) | set(y)):
            if x.get(key) != y.get(key):
                out.append(f"iteration {x.get('iteration')}: {key} {x.get(key)} vs {y.get(key)}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--pairs", action="store_true", help="compare the run folders inside a and b")
    args = ap.parse_args()
    pairs = ([(d, args.b / d.name) for d in sorted(args.a.iterdir()) if (d / "metrics.jsonl").exists()]
             if args.pairs else [(args.a, args.b)])
    bad = 0
    for a, b in pairs:
        diff = differences(a, b)
        print(f"{a.name}: {len(rows(a))} iterations, {len(diff)} differences", *diff[:5], sep="\n  ")
        bad += len(diff)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
