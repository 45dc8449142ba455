"""`red report`: the runs of a sweep, grouped by their overrides minus the seed -> table, curves.

A group is every run whose ``overrides.json`` is the same once ``ignore_keys`` (the seed,
bookkeeping keys) are dropped, so ``red train -m redistribution=sparse,td seed=0,1,2`` gives
two groups of three seeds. Per group, across its seeds (mean +- 2 standard errors,
SE = sample std / sqrt(seeds)):

- final score / gold: the mean of the last ``final_window`` logged iterations of each run;
- mean score / gold over training: the mean over all logged iterations (the ABC paper's
  headline number);
- iterations until the ``smooth``-iteration moving average of the score first reaches
  ``threshold`` (over the seeds that reach it; how many did is shown);
- win rate vs SFT, from ``<run>/eval/<win_rate_judge>_vs_sft/eval.json`` where `red eval`
  wrote one;
- the safety task's final cost (the cost model's score), gold cost and Lagrange multiplier
  lambda (``SAFETY_METRICS``), where some run logged them.

Writes table.md, table.csv, curves.png (each group's mean curve with a seed band: RM score,
gold, and the KL to the reference policy, ``kl_metric``), frontier.png, and, where some run
logged a safety metric, safety.png (the same curves of cost, gold cost and lambda, the runs'
``ppo.lagrangian.cost_limit`` drawn on the cost panels).

frontier.png is the reward-vs-KL view of RLHF papers (Gao et al. 2023, "Scaling laws for
reward model overoptimization"; Rafailov et al. 2023): x = KL to the reference policy, y = the
RM score and, where logged, the gold score. Each group is ONE line through its training
trajectory, the seed mean of the ``smooth``-iteration moving averages of (KL, score) at every
iteration all its seeds logged (an open circle marks the start, the line runs in training
order), because a trajectory shows both how much reward a mode buys per nat of KL and where
it ends; each run's final point (``final_window``) is a small hollow marker and the group's
mean final point a large filled one, so the seed spread stays visible. Higher and further
left is better.

Bands of different groups overlap, so each group has its own colour, line style and hatch,
the band is filled at low alpha with thin edge lines at its borders, and the legend (under
the panels) shows each group's band and line together.

An earlier report is never overwritten unless ``overwrite=true``: when the output folder
already holds a table.md, the report goes to the numbered subfolder ``report_2`` (then
``report_3``, ...) inside it, and the folder used is printed.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from red_cli import runs as rundirs
from red_cli.errors import ReportError, UserError
from red_cli.eval.stats import mean_2se
from red_cli.eval.tables import markdown_table, pm

log = logging.getLogger("red")


# --------------------------------------------------------------------------- runs


@dataclass
class Run:
    dir: Path
    overrides: list[str]
    group: str
    metrics: list[dict]
    status: str | None
    win_rate: float | None = None
    cost_limit: float | None = None  # ppo.lagrangian.cost_limit, with a cost model only


@dataclass
class Group:
    label: str
    runs: list[Run] = field(default_factory=list)


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def group_label(overrides: Sequence[str], ignore_keys: Sequence[str]) -> str:
    """The overrides that define a group: sorted, without ignored keys (and their sub-keys)."""
    kept = [o for o in overrides
            if not any(_override_key(o) == k or _override_key(o).startswith(k + ".")
                       for k in ignore_keys)]
    return ",".join(sorted(kept)) or "(defaults)"


def _eval_win_rate(run_dir: Path, judge: str) -> float | None:
    path = run_dir / "eval" / f"{judge}_vs_sft" / "eval.json"
    if not path.is_file():
        return None
    try:
        return float(json.loads(path.read_text())["win_rate"])
    except (ValueError, KeyError, TypeError):
        log.warning("%s: unreadable eval.json, ignored", path)
        return None


def _cost_limit(run_dir: Path) -> float | None:
    """The run's ``ppo.lagrangian.cost_limit`` if it trained with a cost model, else None."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(run_dir / "config.yaml")
    if not OmegaConf.select(cfg, "cost_model.path", default=None):
        return None
    limit = OmegaConf.select(cfg, "ppo.lagrangian.cost_limit", default=None)
    return None if limit is None else float(limit)


def load_runs(paths: Sequence[str], ignore_keys: Sequence[str], win_rate_judge: str) -> list[Run]:
    runs = []
    try:
        run_dirs = rundirs.find_runs(paths)
    except UserError as err:
        raise ReportError(str(err)) from None
    for run_dir in run_dirs:
        overrides = rundirs.read_overrides(run_dir)
        if overrides is None:
            from omegaconf import OmegaConf

            mode = OmegaConf.load(run_dir / "config.yaml").redistribution.mode
            overrides = [f"redistribution={mode}"]
            log.warning("%s: no overrides.json; grouped by its redistribution mode", run_dir)
        metrics = rundirs.read_metrics(run_dir / "metrics.jsonl")
        if not metrics:
            log.warning("%s: no metrics.jsonl (or empty); left out", run_dir)
            continue
        status = rundirs.read_status(run_dir)
        if status != "complete":
            log.warning("%s: run status %s; its metrics so far are included", run_dir, status)
        runs.append(Run(run_dir, overrides, group_label(overrides, ignore_keys), metrics, status,
                        _eval_win_rate(run_dir, win_rate_judge), _cost_limit(run_dir)))
    if not runs:
        raise ReportError("runs: no run with metrics found in " + ", ".join(map(str, paths)))
    return runs


def group_runs(runs: Sequence[Run]) -> tuple[list[Group], list[str]]:
    """Groups of runs, labelled by the overrides that tell them apart; and the overrides
    every group shares (left out of the labels, listed once under the table)."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.group, []).append(run)
    parts = {key: [] if key == "(defaults)" else key.split(",") for key in groups}
    common = sorted(set.intersection(*(set(p) for p in parts.values()))) if len(groups) > 1 else []
    out = []
    for key in sorted(groups):
        label = ",".join(p for p in parts[key] if p not in common) or key
        out.append(Group(label, groups[key]))
    return out, common


# --------------------------------------------------------------------------- per-run numbers


def series(metrics: Sequence[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(iterations, values) of one metric, in logged order."""
    rows = [(m["iteration"], m[key]) for m in metrics if m.get(key) is not None]
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    it, val = zip(*rows)
    return np.asarray(it), np.asarray(val, dtype=np.float64)


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` values (fewer at the start)."""
    if window <= 1 or values.size == 0:
        return values
    c = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, values.size + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def first_reach(iterations: np.ndarray, values: np.ndarray, threshold: float) -> int | None:
    """First iteration whose value is >= threshold, or None."""
    hit = np.nonzero(values >= threshold)[0]
    return int(iterations[hit[0]]) if hit.size else None


def final_value(values: np.ndarray, window: int) -> float:
    return float(values[-window:].mean()) if values.size else float("nan")


def overall_mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


# --------------------------------------------------------------------------- the table


# The safety task's metrics (a run with a cost model; gold cost: the toy world), each in the
# table ("final <header>") and safety.png where some run logged it: (name, key, header, title).
SAFETY_METRICS = (
    ("cost", "objective/cost", "cost", "cost (the cost model's score)"),
    ("gold_cost", "objective/gold_cost", "gold cost", "gold cost"),
    ("lambda", "lagrange/lambda", "λ", "Lagrange multiplier λ"),
)


def safety_metrics(groups: Sequence[Group]) -> list[tuple[str, str, str, str]]:
    """The entries of SAFETY_METRICS some run of ``groups`` logged."""
    return [m for m in SAFETY_METRICS if _has_metric(groups, m[1])]


def group_cost_limit(group: Group) -> float:
    """The cost limit the group's runs trained under (nan: none, or not one for all)."""
    limits = {r.cost_limit for r in group.runs}
    return limits.pop() if len(limits) == 1 and None not in limits else math.nan


def group_rows(groups: Sequence[Group], cfg: Any) -> list[dict]:
    """One dict of numbers per group (the CSV's rows)."""
    rows = []
    metrics = [("score", cfg.score_metric), ("gold", cfg.gold_metric), ("kl", cfg.kl_metric)]
    safety = safety_metrics(groups)
    metrics += [(name, key) for name, key, _, _ in safety]
    for g in groups:
        row: dict[str, Any] = {"group": g.label, "seeds": len(g.runs)}
        for name, key in metrics:
            per_run = [series(r.metrics, key)[1] for r in g.runs]
            for stat, f in (("final", lambda v: final_value(v, cfg.final_window)),
                            ("mean", overall_mean)):
                m, s = mean_2se([f(v) for v in per_run])
                row[f"{stat}_{name}"], row[f"{stat}_{name}_2se"] = m, s
        wins = [r.win_rate for r in g.runs if r.win_rate is not None]
        m, s = mean_2se(wins)
        row["win_rate_vs_sft"], row["win_rate_vs_sft_2se"] = m, s
        row["win_rate_runs"] = len(wins)
        if safety:
            row["cost_limit"] = group_cost_limit(g)
        rows.append(row)
    threshold = resolve_threshold(rows, cfg)
    if threshold is None:
        return rows
    key = cfg.score_metric if cfg.threshold_metric == "score" else cfg.gold_metric
    for g, row in zip(groups, rows):
        reached = []
        for r in g.runs:
            it, val = series(r.metrics, key)
            hit = first_reach(it, moving_average(val, cfg.smooth), threshold)
            if hit is not None:
                reached.append(float(hit))
        m, s = mean_2se(reached)
        row["threshold"] = threshold
        row["iters_to_threshold"], row["iters_to_threshold_2se"] = m, s
        row["reached_threshold"] = len(reached)
    return rows


THRESHOLD_METRICS = ("score", "gold")


def resolve_threshold(rows: Sequence[dict], cfg: Any) -> float | None:
    """The threshold value: given, or a group's final mean of the threshold metric."""
    if cfg.threshold_metric not in THRESHOLD_METRICS:
        raise ReportError(f"threshold_metric={cfg.threshold_metric!r}: use one of "
                          + ", ".join(THRESHOLD_METRICS))
    if cfg.threshold is not None and cfg.threshold_group is not None:
        raise ReportError("threshold and threshold_group are both set; give one of them")
    if cfg.threshold_group is None:
        return cfg.threshold
    labels = [r["group"] for r in rows]
    # `sparse` names the group `redistribution=sparse` (Hydra needs quotes around a `=`).
    values_only = [",".join(o.split("=", 1)[-1] for o in label.split(",")) for label in labels]
    hits = [i for i, (lab, val) in enumerate(zip(labels, values_only))
            if cfg.threshold_group in (lab, val)]
    if len(hits) != 1:
        raise ReportError(f"threshold_group={cfg.threshold_group!r} is not a group of these runs; "
                          "groups are: " + ", ".join(labels))
    value = rows[hits[0]][f"final_{cfg.threshold_metric}"]
    if math.isnan(value):
        raise ReportError(f"threshold_group={cfg.threshold_group!r} has no final "
                          f"{cfg.threshold_metric} to use as the threshold")
    return value


def markdown_report(rows: Sequence[dict], cfg: Any, common: Sequence[str] = ()) -> str:
    has_gold = any(not math.isnan(r["mean_gold"]) for r in rows)
    has_wins = any(r["win_rate_runs"] for r in rows)
    has_kl = any(not math.isnan(r["final_kl"]) for r in rows)
    safety = [(name, header) for name, _, header, _ in SAFETY_METRICS
              if any(not math.isnan(r.get(f"final_{name}", math.nan)) for r in rows)]
    headers = ["group", "seeds", "final score", "mean score"]
    if has_gold:
        headers += ["final gold", "mean gold"]
    if has_kl:
        headers.append("final KL")
    headers += [f"final {header}" for _, header in safety]
    threshold = rows[0].get("threshold") if rows else None
    if threshold is not None:
        what = (f"{cfg.threshold_group}'s final" if cfg.threshold_group is not None
                else f"{threshold:g}")
        headers.append(f"iters to {cfg.threshold_metric} ≥ {what}")
    if has_wins:
        headers.append(f"win rate vs SFT ({cfg.win_rate_judge})")
    body = []
    for r in rows:
        line = [r["group"], r["seeds"], pm(r["final_score"], r["final_score_2se"]),
                pm(r["mean_score"], r["mean_score_2se"])]
        if has_gold:
            line += [pm(r["final_gold"], r["final_gold_2se"]), pm(r["mean_gold"], r["mean_gold_2se"])]
        if has_kl:
            line.append(pm(r["final_kl"], r["final_kl_2se"]))
        line += [pm(r[f"final_{name}"], r[f"final_{name}_2se"]) for name, _ in safety]
        if threshold is not None:
            line.append(f"{pm(r['iters_to_threshold'], r['iters_to_threshold_2se'], 1)} "
                        f"({r['reached_threshold']}/{r['seeds']})")
        if has_wins:
            line.append(f"{pm(r['win_rate_vs_sft'], r['win_rate_vs_sft_2se'])} "
                        f"({r['win_rate_runs']}/{r['seeds']})")
        body.append(line)
    note = (f"mean ± 2 SE across seeds; final = mean of the last {cfg.final_window} "
            f"iteration(s); score = `{cfg.score_metric}`, gold = `{cfg.gold_metric}`, KL = "
            f"`{cfg.kl_metric}`")
    if safety:
        keys = {name: key for name, key, _, _ in SAFETY_METRICS}
        note += "; " + ", ".join(f"{header} = `{keys[name]}`" for name, header in safety)
        limits = sorted({r["cost_limit"] for r in rows if not math.isnan(r["cost_limit"])})
        if limits:
            note += ("; cost limit `ppo.lagrangian.cost_limit` = "
                     + ", ".join(f"{v:g}" for v in limits))
    if threshold is not None:
        note += (f"; threshold {threshold:.3f} on the {cfg.smooth}-iteration moving average of "
                 f"{cfg.threshold_metric} (mean over the seeds that reached it)")
    if common:
        note += "; every group also has: " + " ".join(f"`{o}`" for o in common)
    return markdown_table(headers, body) + "\n" + note + "\n"


def write_csv(rows: Sequence[dict], path: Path) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v)
                             for k, v in r.items()})


# --------------------------------------------------------------------------- curves


def group_curve(runs: Sequence[Run], key: str, smooth: int, band: str):
    """(iterations, mean, low, high) over the iterations every run of the group logged."""
    per_run = [series(r.metrics, key) for r in runs]
    per_run = [(it, moving_average(v, smooth)) for it, v in per_run if it.size]
    if not per_run:
        return None
    common = sorted(set.intersection(*(set(it.tolist()) for it, _ in per_run)))
    if not common:
        return None
    stack = np.stack([v[np.searchsorted(it, common)] for it, v in per_run])  # [seeds, iters]
    mean = stack.mean(0)
    if band == "minmax":
        low, high = stack.min(0), stack.max(0)
    elif band == "se2" and stack.shape[0] > 1:
        half = 2 * stack.std(0, ddof=1) / math.sqrt(stack.shape[0])
        low, high = mean - half, mean + half
    else:
        low = high = None
    return np.asarray(common), mean, low, high


LINESTYLES = ("-", "--", "-.", ":")
HATCHES = ("//", "\\\\", "..", "xx", "||", "--", "++", "oo")


@dataclass(frozen=True)
class GroupStyle:
    color: tuple
    linestyle: str
    hatch: str


def group_style(n: int) -> GroupStyle:
    """Colour, line style and hatch of the n-th group: all three differ between neighbours."""
    import matplotlib

    return GroupStyle(matplotlib.colormaps["tab10"](n % 10), LINESTYLES[n % len(LINESTYLES)],
                      HATCHES[n % len(HATCHES)])


def _has_metric(groups: Sequence[Group], key: str) -> bool:
    return any(series(r.metrics, key)[0].size for g in groups for r in g.runs)


def curve_panels(groups: Sequence[Group], cfg: Any) -> list[tuple[str, str]]:
    """(metric, title) of each curves.png panel: RM score, gold, KL, those that were logged."""
    panels = [(cfg.score_metric, "RM score"), (cfg.gold_metric, "gold score"),
              (cfg.kl_metric, "KL to the reference (sum over tokens)")]
    return [(k, t) for k, t in panels if _has_metric(groups, k)]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _legend_below(fig, handles: list, labels: list[str], width_in: float) -> float:
    """A legend under the panels; returns the figure fraction it takes."""
    from matplotlib.legend_handler import HandlerTuple

    longest = max((len(lab) for lab in labels), default=10)
    ncol = max(1, min(len(labels), int(width_in * 72 / (6.0 * longest + 60))))
    rows = math.ceil(len(labels) / ncol)
    height = (0.28 * rows + 0.15) / fig.get_figheight()
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=9, frameon=False,
               handler_map={tuple: HandlerTuple(ndivide=None)}, handlelength=3.5)
    return height


def _save(fig, path: Path, title: str, panels: Sequence[str]) -> None:
    # The panel titles go into the PNG's text chunk ("Description"), for tests and tools.
    fig.savefig(path, dpi=120, metadata={"Title": title, "Description": "panels: "
                                         + " | ".join(panels)})


def threshold_lines(cfg: Any) -> dict[str, list[tuple[float, str]]]:
    """curves.png's reference line: the threshold, on the threshold metric's panel."""
    if cfg.threshold is None:
        return {}
    key = cfg.score_metric if cfg.threshold_metric == "score" else cfg.gold_metric
    return {key: [(cfg.threshold, f"threshold {cfg.threshold:g}")]}


def plot_groups(groups: Sequence[Group], path: Path, cfg: Any,
                panels: Sequence[tuple[str, str]] | None = None,
                lines: dict[str, list[tuple[float, str]]] | None = None) -> list[str]:
    """Per group, the mean curve over seeds and a seed band, one panel per (metric, title) of
    ``panels`` (curves.png's, :func:`curve_panels`, unless given), with horizontal reference
    ``lines`` (metric -> [(y, label)]; the threshold unless given); returns panel titles."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    plt = _pyplot()
    panels = curve_panels(groups, cfg) if panels is None else panels
    lines = threshold_lines(cfg) if lines is None else lines
    width = 5.2 * max(len(panels), 1)
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(width, 4.6), squeeze=False)
    handles, labels = [], []
    for n, g in enumerate(groups):
        st = group_style(n)
        line = Line2D([], [], color=st.color, ls=st.linestyle, lw=2.0)
        if cfg.band != "none" and len(g.runs) > 1:
            band = Patch(facecolor=(*st.color[:3], 0.15), edgecolor=st.color, hatch=st.hatch,
                         lw=0.8)
            handles.append((band, line))
        else:
            handles.append(line)
        labels.append(f"{g.label} ({len(g.runs)} seed{'s' if len(g.runs) != 1 else ''})")
    for ax, (key, title) in zip(axes[0], panels):
        for n, g in enumerate(groups):
            curve = group_curve(g.runs, key, cfg.smooth, cfg.band)
            if curve is None:
                continue
            it, mean, low, high = curve
            st = group_style(n)
            if low is not None:
                ax.fill_between(it, low, high, facecolor=st.color, alpha=0.10, lw=0, zorder=1)
                ax.fill_between(it, low, high, facecolor="none", edgecolor=(*st.color[:3], 0.45),
                                hatch=st.hatch, lw=0, zorder=1)
                for edge in (low, high):
                    ax.plot(it, edge, color=st.color, ls=st.linestyle, lw=0.7, alpha=0.7,
                            zorder=2)
            ax.plot(it, mean, color=st.color, ls=st.linestyle, lw=2.0, zorder=3)
        for y, text in lines.get(key, []):
            ax.axhline(y, color="grey", ls=(0, (1, 3)), lw=1.2)
            ax.annotate(text, (0.01, y), fontsize=8, color="grey",
                        xycoords=("axes fraction", "data"), va="bottom")
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("iteration")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    band = {"se2": "band: mean ± 2 SE across seeds", "minmax": "band: min-max across seeds",
            "none": ""}[cfg.band]
    smooth = f"{cfg.smooth}-iteration moving average; " if cfg.smooth > 1 else ""
    title = f"mean over seeds per group ({smooth}{band or 'no band'})"
    fig.suptitle(title, fontsize=11)
    bottom = _legend_below(fig, handles, labels, width)
    fig.tight_layout(rect=(0, bottom, 1, 0.97))
    _save(fig, path, title, [t for _, t in panels])
    plt.close(fig)
    return [t for _, t in panels]


def plot_safety(groups: Sequence[Group], path: Path, cfg: Any) -> list[str]:
    """safety.png: :func:`plot_groups` of the logged SAFETY_METRICS, each cost limit the
    groups trained under drawn on the cost panels. Returns the panel titles; an empty list
    (and no file) when no run logged one."""
    panels = [(key, title) for _, key, _, title in safety_metrics(groups)]
    if not panels:
        return []
    limits = sorted({v for g in groups if not math.isnan(v := group_cost_limit(g))})
    marks = [(v, f"cost limit {v:g}") for v in limits]
    return plot_groups(groups, path, cfg, panels,
                       {key: marks for name, key, _, _ in SAFETY_METRICS
                        if name in ("cost", "gold_cost")})


# --------------------------------------------------------------------------- frontier


@dataclass
class FrontierLine:
    """One group on the reward-vs-KL plot, for one y metric."""

    label: str
    seeds: int
    kl: np.ndarray                 # the seed mean of each run's smoothed KL, in training order
    value: np.ndarray              # the same for the y metric, at the same iterations
    final_kl: list[float]          # per run: the mean KL of its last final_window iterations
    final_value: list[float]       # per run: the same for the y metric

    @property
    def mean_final(self) -> tuple[float, float]:
        return float(np.mean(self.final_kl)), float(np.mean(self.final_value))


def frontier_line(group: Group, y_key: str, cfg: Any) -> FrontierLine | None:
    """A group's (KL, y) trajectory: the iterations where every seed logged both metrics,
    each metric smoothed per run (``smooth``) then averaged over seeds; and each run's final
    (KL, y). None when the group logged no KL or no y."""
    kl = group_curve(group.runs, cfg.kl_metric, cfg.smooth, "none")
    val = group_curve(group.runs, y_key, cfg.smooth, "none")
    if kl is None or val is None:
        return None
    _, ik, iv = np.intersect1d(kl[0], val[0], return_indices=True)
    finals = []
    for r in group.runs:
        fk = final_value(series(r.metrics, cfg.kl_metric)[1], cfg.final_window)
        fv = final_value(series(r.metrics, y_key)[1], cfg.final_window)
        if not (math.isnan(fk) or math.isnan(fv)):
            finals.append((fk, fv))
    if not ik.size or not finals:
        return None
    return FrontierLine(group.label, len(group.runs), kl[1][ik], val[1][iv],
                        [f[0] for f in finals], [f[1] for f in finals])


def frontier_data(groups: Sequence[Group], cfg: Any) -> dict[str, list[tuple[int, FrontierLine]]]:
    """Per y panel title ("RM score", "gold score" where logged): (group index, line)."""
    out: dict[str, list[tuple[int, FrontierLine]]] = {}
    for key, title in ((cfg.score_metric, "RM score"), (cfg.gold_metric, "gold score")):
        lines = [(n, line) for n, g in enumerate(groups)
                 if (line := frontier_line(g, key, cfg)) is not None]
        if lines:
            out[title] = lines
    return out


def plot_frontier(groups: Sequence[Group], path: Path, cfg: Any) -> list[str]:
    """frontier.png: y against KL to the reference, one trajectory per group (see the module
    docstring). Returns the panel titles; an empty list (and no file) without a KL metric."""
    from matplotlib.lines import Line2D

    data = frontier_data(groups, cfg)
    if not data:
        log.warning("frontier.png: no run logged both %s and %s; not drawn", cfg.kl_metric,
                    cfg.score_metric)
        return []
    plt = _pyplot()
    width = 6.0 * len(data)
    fig, axes = plt.subplots(1, len(data), figsize=(width, 5.0), squeeze=False)
    titles = []
    for ax, (title, lines) in zip(axes[0], data.items()):
        for n, line in lines:
            st = group_style(n)
            ax.plot(line.kl, line.value, color=st.color, ls=st.linestyle, lw=1.8, zorder=2)
            ax.plot(line.kl[:1], line.value[:1], "o", mfc="white", mec=st.color, ms=5, zorder=3)
            ax.scatter(line.final_kl, line.final_value, s=28, facecolors="none",
                       edgecolors=[st.color], lw=1.0, zorder=3)
            mk, mv = line.mean_final
            ax.plot([mk], [mv], "D", color=st.color, mec="black", mew=0.8, ms=8, zorder=4)
        key = cfg.score_metric if title == "RM score" else cfg.gold_metric
        full = f"{title} vs KL to the reference"
        titles.append(full)
        ax.set_title(full, fontsize=11)
        ax.set_xlabel(f"KL to the reference policy ({cfg.kl_metric}, nats)")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    handles: list = []
    labels: list[str] = []
    for n, g in enumerate(groups):
        st = group_style(n)
        handles.append(Line2D([], [], color=st.color, ls=st.linestyle, lw=2.0, marker="D",
                              mec="black", ms=6))
        labels.append(f"{g.label} ({len(g.runs)} seed{'s' if len(g.runs) != 1 else ''})")
    handles += [Line2D([], [], ls="none", marker="o", mfc="white", mec="grey", ms=5),
                Line2D([], [], ls="none", marker="o", mfc="none", mec="grey", ms=6),
                Line2D([], [], ls="none", marker="D", color="grey", mec="black", ms=7)]
    labels += ["start of training", f"one run's final (last {cfg.final_window} it.)",
               "group mean final"]
    smooth = f", {cfg.smooth}-iteration moving average" if cfg.smooth > 1 else ""
    title = f"reward vs KL: each group's mean trajectory over training{smooth}"
    fig.suptitle(title, fontsize=11)
    bottom = _legend_below(fig, handles, labels, width)
    fig.tight_layout(rect=(0, bottom, 1, 0.97))
    _save(fig, path, title, titles)
    plt.close(fig)
    return titles


# --------------------------------------------------------------------------- the verb


def default_output_dir(run_dirs: Sequence[Path]) -> Path:
    """The multirun directory, or the common parent of the runs given."""
    return Path(os.path.commonpath([str(d.parent) for d in run_dirs]))


def report_dir(base: Path, overwrite: bool) -> Path:
    """Where a report goes: ``base``, unless it already holds one (table.md) and ``overwrite``
    is false; then the first ``base/report_N`` (N = 2, 3, ...) without a table.md."""
    if overwrite or not (base / "table.md").exists():
        return base
    n = 2
    while (base / f"report_{n}" / "table.md").exists():
        n += 1
    return base / f"report_{n}"


def run_report(cfg: Any) -> Path:
    """Write table.md, table.csv, curves.png, frontier.png (and safety.png where a run logged
    a safety metric); print the table and where it went; return the output folder."""
    runs = load_runs(list(cfg.runs), list(cfg.ignore_keys), cfg.win_rate_judge)
    groups, common = group_runs(runs)
    rows = group_rows(groups, cfg)
    table = markdown_report(rows, cfg, common)
    base = Path(cfg.output_dir) if cfg.output_dir else default_output_dir([r.dir for r in runs])
    out = report_dir(base, cfg.overwrite)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table)
    write_csv(rows, out / "table.csv")
    plot_groups(groups, out / "curves.png", cfg)
    plot_frontier(groups, out / "frontier.png", cfg)
    plot_safety(groups, out / "safety.png", cfg)
    print(table)
    note = "" if out == base else f" ({base / 'table.md'} exists; overwrite=true replaces it)"
    print(f"report -> {out}{note}")
    log.info("report of %d runs in %d groups -> %s", len(runs), len(groups), out)
    return out
