"""`red report`'s figures and output folder, and a run's curves.png: the numbers the frontier
draws (by hand), which panels appear, the report_N numbering, the per-run layout."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

from red_cli.eval.report import (
    Group,
    Run,
    curve_panels,
    frontier_data,
    frontier_line,
    group_style,
    plot_frontier,
    plot_groups,
    report_dir,
)
from red_cli.train.metrics import plot_curves


def _cfg(**kw):
    base = dict(score_metric="objective/score", gold_metric="objective/gold",
                kl_metric="objective/kl", smooth=1, final_window=1, band="se2", threshold=None,
                threshold_metric="score")
    return types.SimpleNamespace(**{**base, **kw})


def _run(rows: list[dict]) -> Run:
    return Run(Path("."), [], "g", rows, "complete")


def _rows(kl, score, gold=None, gold_every=1):
    out = []
    for i, (k, s) in enumerate(zip(kl, score)):
        row = {"iteration": i, "objective/kl": k, "objective/score": s}
        if gold is not None and i % gold_every == 0:
            row["objective/gold"] = gold[i]
        out.append(row)
    return out


# --------------------------------------------------------------------------- output folder


def test_report_dir_numbering(tmp_path):
    base = tmp_path / "sweep"
    assert report_dir(base, overwrite=False) == base  # nothing there yet
    base.mkdir()
    assert report_dir(base, overwrite=False) == base  # a folder without a report
    (base / "table.md").write_text("x")
    assert report_dir(base, overwrite=False) == base / "report_2"
    assert report_dir(base, overwrite=True) == base
    (base / "report_2").mkdir()
    assert report_dir(base, overwrite=False) == base / "report_2"  # empty: used
    (base / "report_2" / "table.md").write_text("x")
    assert report_dir(base, overwrite=False) == base / "report_3"
    (base / "report_3").mkdir()
    (base / "report_3" / "table.md").write_text("x")
    assert report_dir(base, overwrite=False) == base / "report_4"


# --------------------------------------------------------------------------- frontier


def test_frontier_line_by_hand():
    a = _run(_rows([0.0, 1.0, 2.0, 3.0], [0.0, 0.2, 0.4, 0.6]))
    b = _run(_rows([0.0, 3.0, 4.0, 5.0], [0.2, 0.4, 0.4, 1.0]))
    line = frontier_line(Group("g", [a, b]), "objective/score", _cfg())
    assert line.seeds == 2
    np.testing.assert_allclose(line.kl, [0.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(line.value, [0.1, 0.3, 0.4, 0.8])
    assert line.final_kl == [3.0, 5.0] and line.final_value == pytest.approx([0.6, 1.0])
    assert line.mean_final == pytest.approx((4.0, 0.8))

    # smooth=2 averages each run's metric over 2 iterations first; final_window=2 too.
    line = frontier_line(Group("g", [a, b]), "objective/score", _cfg(smooth=2, final_window=2))
    np.testing.assert_allclose(line.kl, [0.0, (0.5 + 1.5) / 2, (1.5 + 3.5) / 2, (2.5 + 4.5) / 2])
    np.testing.assert_allclose(line.value[-1], (0.5 + 0.7) / 2)
    assert line.final_kl == pytest.approx([2.5, 4.5])


def test_frontier_gold_at_its_own_iterations():
    """Gold logged every 2nd iteration: the gold line has those points only."""
    run = _run(_rows([0.0, 1.0, 2.0, 3.0, 4.0], [0] * 5, gold=[0.0, 9, 0.2, 9, 0.4],
                     gold_every=2))
    line = frontier_line(Group("g", [run]), "objective/gold", _cfg())
    np.testing.assert_allclose(line.kl, [0.0, 2.0, 4.0])
    np.testing.assert_allclose(line.value, [0.0, 0.2, 0.4])
    assert line.final_kl == [4.0] and line.final_value == [0.4]


def test_frontier_data_panels():
    with_gold = Group("a", [_run(_rows([0, 1], [0, 1], gold=[0, 1]))])
    no_gold = Group("b", [_run(_rows([0, 1], [0, 2]))])
    data = frontier_data([with_gold, no_gold], _cfg())
    assert list(data) == ["RM score", "gold score"]
    assert [n for n, _ in data["RM score"]] == [0, 1]
    assert [n for n, _ in data["gold score"]] == [0]  # the group index keeps its colour
    no_kl = Group("c", [_run([{"iteration": 0, "objective/score": 1.0}])])
    assert frontier_line(no_kl, "objective/score", _cfg()) is None
    assert frontier_data([no_kl], _cfg()) == {}


# --------------------------------------------------------------------------- figures


def _groups(n_groups=3, seeds=2, iters=30):
    rng = np.random.default_rng(0)
    groups = []
    for g in range(n_groups):
        runs = []
        for _ in range(seeds):
            kl = np.cumsum(rng.uniform(0, 0.05, iters))
            score = 0.02 * (g + 1) * np.arange(iters) + rng.normal(0, 0.1, iters)
            runs.append(_run(_rows(kl.tolist(), score.tolist(), gold=(score / 3).tolist())))
        groups.append(Group(f"redistribution=m{g}", runs))
    return groups


def test_curve_panels_include_kl_when_logged():
    groups = _groups()
    assert [t for _, t in curve_panels(groups, _cfg())] == [
        "RM score", "gold score", "KL to the reference (sum over tokens)"]
    plain = [Group("x", [_run([{"iteration": 0, "objective/score": 1.0}])])]
    assert [t for _, t in curve_panels(plain, _cfg())] == ["RM score"]


def test_group_styles_differ_between_neighbours():
    styles = [group_style(n) for n in range(8)]
    for a, b in zip(styles, styles[1:]):
        assert a.color != b.color and a.linestyle != b.linestyle and a.hatch != b.hatch


def _png_panels(path: Path) -> str:
    from PIL import Image

    return Image.open(path).text["Description"]


def test_plot_groups_and_frontier_files(tmp_path):
    import matplotlib.image

    groups = _groups()
    cfg = _cfg(smooth=3, threshold=0.3)
    titles = plot_groups(groups, tmp_path / "curves.png", cfg)
    assert "KL to the reference (sum over tokens)" in titles
    assert _png_panels(tmp_path / "curves.png") == "panels: " + " | ".join(titles)
    titles = plot_frontier(groups, tmp_path / "frontier.png", cfg)
    assert titles == ["RM score vs KL to the reference", "gold score vs KL to the reference"]
    height, width = matplotlib.image.imread(tmp_path / "frontier.png").shape[:2]
    assert width > height > 300
    # Without a KL metric there is no frontier, and no file.
    assert plot_frontier(groups, tmp_path / "none.png", _cfg(kl_metric="nope")) == []
    assert not (tmp_path / "none.png").exists()


def _train_rows(n=40, keys=("objective/score", "objective/gold", "objective/kl",
                            "ppo/loss/policy", "ppo/loss/value", "objective/response_length",
                            "ppo/policy/entropy")):
    return [{"iteration": i, **{k: float(np.sin(i + j)) for j, k in enumerate(keys)}}
            for i in range(n)]


def test_plot_curves_two_rows(tmp_path):
    import matplotlib.image

    titles = plot_curves(_train_rows(), tmp_path / "plots" / "curves.png", "td / toy / seed 0")
    assert titles == ["RM score", "gold score", "KL to the reference (sum over tokens)",
                      "policy loss", "value loss", "response length (tokens)"]
    height, width = matplotlib.image.imread(tmp_path / "plots" / "curves.png").shape[:2]
    assert 1300 <= width <= 1500 and 700 <= height <= 900


def test_plot_curves_only_logged_metrics(tmp_path):
    import matplotlib.image

    # No critic: entropy takes the value loss's place.
    rows = _train_rows(keys=("objective/score", "objective/kl", "ppo/loss/policy",
                             "ppo/policy/entropy"))
    titles = plot_curves(rows, tmp_path / "a.png")
    assert titles == ["RM score", "KL to the reference (sum over tokens)", "policy loss",
                      "policy entropy"]
    # Three panels or fewer: one row.
    titles = plot_curves(_train_rows(keys=("objective/score", "objective/kl")), tmp_path / "b.png")
    assert len(titles) == 2
    height, width = matplotlib.image.imread(tmp_path / "b.png").shape[:2]
    assert height < 500 and width > 1300


# --------------------------------------------------------------------------- safety


def _write_run(run_dir: Path, overrides: list[str], rows: list[dict],
               cost_model: str | None = None, limit: float = 0.5) -> None:
    """A run directory as `red report` reads it, by hand: config.yaml (with a cost_model node
    only when given one: older runs have none), overrides.json, run.json, metrics.jsonl."""
    import json

    from omegaconf import OmegaConf

    run_dir.mkdir(parents=True)
    cfg = {"redistribution": {"mode": "td"}, "ppo": {"lagrangian": {"cost_limit": limit}}}
    if cost_model is not None:
        cfg["cost_model"] = {"name": "toy", "path": cost_model}
    OmegaConf.save(OmegaConf.create(cfg), run_dir / "config.yaml")
    (run_dir / "overrides.json").write_text(json.dumps(overrides))
    (run_dir / "run.json").write_text(json.dumps({"status": "complete"}))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _safety_rows(final_cost: float, final_lambda: float, n: int = 6) -> list[dict]:
    rows = _rows([0.1 * i for i in range(n)], [0.05 * i for i in range(n)])
    for i, row in enumerate(rows):
        last = i == n - 1
        row.update({"objective/cost": final_cost if last else 2.0 - 0.2 * i,
                    "objective/gold_cost": 2 * final_cost if last else 3.0,
                    "lagrange/lambda": final_lambda if last else 1.0 + 0.1 * i})
    return rows


def _report_cfg(runs: list[str], out: Path, **kw):
    return _cfg(runs=runs, ignore_keys=["seed"], win_rate_judge="gold", threshold_group=None,
                output_dir=str(out), overwrite=False, **kw)


def test_report_safety_columns_and_figure(tmp_path, capsys):
    """Cost, gold cost and lambda columns (mean ± 2 SE over seeds, by hand) and safety.png
    with the runs' cost limit, for the group with a cost model; '-' for the control."""
    import csv

    from red_cli.eval.report import run_report

    sweep = tmp_path / "sweep"
    for seed, (cost, lam) in enumerate(((0.4, 2.0), (0.6, 3.0))):
        _write_run(sweep / f"lag_s{seed}", ["cost_model=toy", f"seed={seed}"],
                   _safety_rows(cost, lam), cost_model="toy:cost_model", limit=0.5)
        _write_run(sweep / f"ctl_s{seed}", ["cost_model=none", f"seed={seed}"],
                   _rows([0.1, 0.2], [0.0, 0.1]))  # an older run: no cost_model node at all
    out = run_report(_report_cfg([str(sweep)], tmp_path / "report"))
    table = (out / "table.md").read_text()
    head = table.splitlines()[0]
    assert head.endswith("| final KL | final cost | final gold cost | final λ |")
    # final cost: 0.4 and 0.6 -> mean 0.5, 2 SE = 2 * 0.1414 / sqrt(2) = 0.2
    assert "| cost_model=toy | 2 |" in table
    lag = next(line for line in table.splitlines() if line.startswith("| cost_model=toy"))
    assert lag.endswith("| 0.500 ± 0.200 | 1.000 ± 0.400 | 2.500 ± 1.000 |")
    ctl = next(line for line in table.splitlines() if line.startswith("| cost_model=none"))
    assert ctl.endswith("| - | - | - |")
    assert "cost = `objective/cost`, gold cost = `objective/gold_cost`, λ = `lagrange/lambda`" \
        in table and "cost limit `ppo.lagrangian.cost_limit` = 0.5" in table
    rows = {r["group"]: r for r in csv.DictReader((out / "table.csv").open())}
    assert float(rows["cost_model=toy"]["cost_limit"]) == 0.5
    assert rows["cost_model=none"]["cost_limit"] == "" == rows["cost_model=none"]["final_cost"]
    assert _png_panels(out / "safety.png") == "panels: " + " | ".join(
        ["cost (the cost model's score)", "gold cost", "Lagrange multiplier λ"])
    assert "| final cost | final gold cost | final λ |" in capsys.readouterr().out


def test_report_without_safety_metrics_is_unchanged(tmp_path):
    from red_cli.eval.report import group_rows, markdown_report, plot_safety

    groups = _groups(n_groups=2, iters=5)
    rows = group_rows(groups, _cfg(threshold_group=None))
    assert not any(k.endswith(("cost", "lambda", "cost_limit")) for r in rows for k in r)
    assert "final cost" not in markdown_report(rows, _cfg(threshold_group=None))
    assert plot_safety(groups, tmp_path / "safety.png", _cfg()) == []
    assert not (tmp_path / "safety.png").exists()
    # Lambda alone (a run whose cost metrics were renamed, say): its panel alone, no limit.
    run = _run([{"iteration": i, "lagrange/lambda": 1.0 + i} for i in range(3)])
    titles = plot_safety([Group("g", [run])], tmp_path / "l.png", _cfg())
    assert titles == ["Lagrange multiplier λ"]
