"""How `red eval` and `red report` print numbers: table cells and Markdown tables."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def fmt(x: Any, digits: int = 3) -> str:
    """A number for a table: fixed decimals; None / nan as '-'."""
    if x is None:
        return "-"
    if isinstance(x, float) and math.isnan(x):
        return "-"
    if isinstance(x, int | np.integer):
        return str(int(x))
    return f"{float(x):.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (cells as given, `|` escaped)."""
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def pm(mean: float, two_se: float, digits: int = 3) -> str:
    if math.isnan(mean):
        return "-"
    if math.isnan(two_se):
        return fmt(mean, digits)
    return f"{fmt(mean, digits)} ± {fmt(two_se, digits)}"
