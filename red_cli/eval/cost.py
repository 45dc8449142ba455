"""Cost in `red eval` (the safety task): how harmful each side's responses are, next to the
win rate. Higher is more harmful.

Two sources, each measured where it applies:

- gold: the toy world's gold cost (``red_cli.toy.cost``: hype words in prompt + response),
  whenever the prompts are the toy world's, with or without a cost model (it is free);
- model: the evaluated run's cost model (``cost_model.path`` of its config.yaml), read as
  training reads it (``red_cli.eval.judges.ModelScores``: unshaped sequence scores). Both
  sides of each batch are scored as they are judged and stored with the item
  (``candidate_cost``, ``baseline_cost`` in generations.jsonl).

Per source, over the judged prompts: each side's mean cost and the share of its responses
whose cost is over the limit (cost > limit), and candidate - baseline, paired over prompts,
each with the same percentile bootstrap interval as the win rate
(``red_cli.eval.stats.cost_stats``). The limit is ``cost_limit`` when given, else the run's
``ppo.lagrangian.cost_limit`` when it has a cost model, else there is none and no share is
reported. It is in the cost model's units; the toy world's cost model is regressed onto the
gold cost, so one limit serves both sources.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from red_cli import runs
from red_cli.eval.judges import ModelScores, Pairs
from red_cli.eval.stats import CostStats, Interval, cost_stats
from red_cli.eval.tables import fmt, markdown_table
from red_cli.runs import RunInfo
from red_cli.toy import is_toy

log = logging.getLogger("red")

SOURCES = {"gold": "gold", "model": "cost model"}  # eval.json key -> table label


def run_cost_model(run: RunInfo | None) -> Any | None:
    """The run's ``cost_model`` node when it trained with one; None for a model path, a run
    without one, or a run older than cost models."""
    return runs.cost_model_node(run.cfg) if run is not None else None


@dataclass
class CostPlan:
    """What an evaluation measures: the gold cost (toy prompts), the run's cost model node
    (or None), the limit (or None) and the key it came from."""

    gold: bool
    model: Any | None
    limit: float | None
    limit_key: str | None

    @property
    def any(self) -> bool:
        return self.gold or self.model is not None


def cost_plan(cost_limit: float | None, run: RunInfo | None, prompts_path: str) -> CostPlan:
    """The costs to measure for ``run`` on ``prompts_path``, and their limit: ``cost_limit``,
    else the run's ``ppo.lagrangian.cost_limit`` when it has a cost model, else none."""
    model = run_cost_model(run)
    gold = is_toy(prompts_path)
    if cost_limit is not None:
        limit, key = float(cost_limit), "cost_limit"
        if not (gold or model is not None):
            log.warning("cost_limit=%s: nothing to compare it with (no cost model in the run, "
                        "and %s are not the toy world's prompts); ignored", cost_limit,
                        prompts_path)
    elif model is not None:
        limit, key = float(run.cfg.ppo.lagrangian.cost_limit), "ppo.lagrangian.cost_limit"
    else:
        limit = key = None
    return CostPlan(gold, model, limit, key)


class CostMeter:
    """The cost model's score of both sides of a judged batch, one dict per pair
    (``candidate_cost``, ``baseline_cost``); identical responses get the same cost, whatever
    float noise (padding, batch composition) the model adds."""

    def __init__(self, scores: Callable[[Any, Any], list[float]]):
        self.scores = scores

    @classmethod
    def load(cls, cost_cfg: Any, toy_cfg: Any, device: str) -> CostMeter:
        return cls(ModelScores(cost_cfg, toy_cfg, device, key="cost_model.path"))

    def __call__(self, pairs: Pairs) -> list[dict]:
        cs = self.scores(pairs.candidate, pairs.candidate_tokenizer)
        bs = self.scores(pairs.baseline, pairs.baseline_tokenizer)
        return [{"candidate_cost": c, "baseline_cost": c if same else b}
                for c, b, same in zip(cs, bs, pairs.same)]


def _interval(iv: Interval | None, name: str) -> dict:
    def num(x: float) -> float | None:
        return None if math.isnan(x) else x  # n = 0: JSON has no NaN

    if iv is None:
        return {name: None, f"{name}_ci_low": None, f"{name}_ci_high": None}
    return {name: num(iv.value), f"{name}_ci_low": num(iv.ci_low),
            f"{name}_ci_high": num(iv.ci_high)}


def _stats_json(s: CostStats) -> dict:
    return {**_interval(s.mean, "mean"), **_interval(s.over_limit, "over_limit")}


def cost_section(rows: list[dict], plan: CostPlan, samples: int, confidence: float,
                 seed: int) -> dict | None:
    """eval.json's ``cost``: per source, n and the candidate's, the baseline's and the
    difference's mean and share over the limit with intervals; None when nothing applies."""
    if not plan.any:
        return None
    paired: dict[str, tuple[list[float], list[float]]] = {}
    if plan.gold:
        from red_cli.toy.cost import gold_costs

        paired["gold"] = (gold_costs([r["prompt"] + r["candidate"] for r in rows]),
                          gold_costs([r["prompt"] + r["baseline"] for r in rows]))
    if plan.model is not None:
        scored = [r for r in rows
                  if r.get("candidate_cost") is not None and r.get("baseline_cost") is not None]
        paired["model"] = ([r["candidate_cost"] for r in scored],
                           [r["baseline_cost"] for r in scored])
    sources = {}
    for name, (cand, base) in paired.items():
        stats = cost_stats(cand, base, plan.limit, samples, confidence, seed)
        sources[name] = {"n": stats["candidate"].n,
                         **{side: _stats_json(s) for side, s in stats.items()}}
    return {"limit": plan.limit, "limit_key": plan.limit_key,
            "cost_model": plan.model.path if plan.model is not None else None,
            "sources": sources}


def format_costs(section: dict, confidence: float) -> str:
    """The console table of eval.json's ``cost`` section (Markdown), with a note under it."""
    pct = round(100 * confidence)
    limit = section["limit"]
    headers = ["cost", "side", "n", "mean", f"{pct}% CI"]
    if limit is not None:
        headers += [f"share > {limit:g}", f"{pct}% CI"]
    body = []
    for name, source in section["sources"].items():
        for side, label in (("candidate", "candidate"), ("baseline", "baseline"),
                            ("difference", "candidate − baseline")):
            s = source[side]
            row = [SOURCES[name], label, source["n"], fmt(s["mean"]),
                   f"[{fmt(s['mean_ci_low'])}, {fmt(s['mean_ci_high'])}]"]
            if limit is not None:
                row += [fmt(s["over_limit"]),
                        f"[{fmt(s['over_limit_ci_low'])}, {fmt(s['over_limit_ci_high'])}]"]
            body.append(row)
    what = []
    if "gold" in section["sources"]:
        what.append("gold = hype words in prompt + response (the toy world's gold cost)")
    if section["cost_model"] is not None:
        what.append(f"cost model = {section['cost_model']}")
    limit_note = (f"limit {limit:g} from `{section['limit_key']}` (share: cost > limit)"
                  if limit is not None else "no limit (set one with cost_limit=...)")
    note = (f"cost: higher is more harmful; {'; '.join(what)}; {limit_note}; CI: percentile "
            "bootstrap over prompts, paired for the difference")
    return markdown_table(headers, body) + "\n" + note + "\n"
