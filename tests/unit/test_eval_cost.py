"""`red eval`'s cost section on fixed texts: which costs an evaluation measures and against
which limit, the cost model's scores stored per item, the gold cost counted by hand, the
numbers in eval.json and the printed table. No model is trained or loaded."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from red_cli.eval import evaluate
from red_cli.eval.cost import CostMeter, CostPlan, cost_plan, cost_section, run_cost_model
from red_cli.eval.judges import Pairs
from red_cli.eval.sides import PolicySpec
from red_cli.runs import RunInfo

TOY = "toy:prompts_eval"


def _run(cost_path: str | None = "toy:cost_model", limit: float = 0.5,
         with_key: bool = True) -> RunInfo:
    cfg = {"ppo": {"lagrangian": {"cost_limit": limit}}}
    if with_key:
        cfg["cost_model"] = {"name": "toy", "path": cost_path}
    return RunInfo(Path("."), OmegaConf.create(cfg))


def test_cost_plan_sources_and_limit():
    # A run with a cost model on toy prompts: both sources, the run's limit.
    plan = cost_plan(None, _run(), TOY)
    assert plan.gold and plan.model.path == "toy:cost_model"
    assert (plan.limit, plan.limit_key) == (0.5, "ppo.lagrangian.cost_limit")
    # cost_limit= overrides it.
    assert (cost_plan(2.0, _run(), TOY).limit, cost_plan(2.0, _run(), TOY).limit_key) == \
        (2.0, "cost_limit")
    # No cost model (null, or a run older than cost models): gold only, no limit unless given.
    for run in (_run(None), _run(with_key=False)):
        assert run_cost_model(run) is None
        plan = cost_plan(None, run, TOY)
        assert plan.gold and plan.model is None and plan.limit is None and plan.any
        assert cost_plan(1.0, run, TOY).limit == 1.0
    # Neither a cost model nor toy prompts: nothing to measure (eval's output is unchanged).
    assert not cost_plan(None, _run(None), "stanfordnlp/imdb").any
    assert not cost_plan(None, None, "stanfordnlp/imdb").any
    # The cost model's own units apply off the toy world too.
    plan = cost_plan(None, _run("PKU-Alignment/beaver-7b-v1.0-cost", 0.0), "PKU/safe")
    assert not plan.gold and plan.model is not None and plan.limit == 0.0


def _rollout(prompts, responses):
    return SimpleNamespace(prompts=prompts, responses=responses)


def test_cost_meter_scores_both_sides_and_ties_identical_texts():
    seen = []

    def scores(rollout, tokenizer):
        seen.append(tokenizer)
        # Float noise on one side: identical texts must still cost the same.
        return [len(r) + (0.001 if tokenizer == "base_tok" else 0) for r in rollout.responses]

    prompts = ["a", "b"]
    cand, base = _rollout(prompts, ["xx", "same"]), _rollout(prompts, ["yyy", "same"])
    rows = CostMeter(scores)(Pairs(prompts, cand, "cand_tok", base, "base_tok", [False, True]))
    assert seen == ["cand_tok", "base_tok"]  # each side read with its own policy tokenizer
    assert rows == [{"candidate_cost": 2, "baseline_cost": 3.001},
                    {"candidate_cost": 4, "baseline_cost": 4}]


ROWS = [  # hype words counted by hand (prompt + response)
    {"prompt": "A great film, ", "candidate": "superb and wonderful.", "baseline": "fine.",
     "candidate_cost": 2.6, "baseline_cost": 0.9},                      # gold 3 vs 1
    {"prompt": "The plot ", "candidate": "was dull.", "baseline": "was GREAT, not greater.",
     "candidate_cost": 0.1, "baseline_cost": 1.2},                      # gold 0 vs 1
    {"prompt": "Acting: ", "candidate": "brilliant!", "baseline": "brilliant!",
     "candidate_cost": 1.0, "baseline_cost": 1.0},                      # gold 1 vs 1
]


def test_cost_section_by_hand():
    plan = CostPlan(gold=True, model=SimpleNamespace(path="toy:cost_model"), limit=1.0,
                    limit_key="ppo.lagrangian.cost_limit")
    section = cost_section(ROWS, plan, samples=200, confidence=0.95, seed=0)
    assert section["limit"] == 1.0 and section["cost_model"] == "toy:cost_model"
    gold, model = section["sources"]["gold"], section["sources"]["model"]
    assert gold["n"] == model["n"] == 3
    assert gold["candidate"]["mean"] == pytest.approx(4 / 3)
    assert gold["baseline"]["mean"] == 1.0
    assert gold["difference"]["mean"] == pytest.approx(1 / 3)
    # Over the limit means > 1: gold 3 only on the candidate side, none on the baseline's.
    assert gold["candidate"]["over_limit"] == pytest.approx(1 / 3)
    assert gold["baseline"]["over_limit"] == 0.0
    assert gold["baseline"]["over_limit_ci_low"] == gold["baseline"]["over_limit_ci_high"] == 0.0
    assert model["candidate"]["mean"] == pytest.approx(3.7 / 3)
    assert model["baseline"]["over_limit"] == pytest.approx(1 / 3)  # 1.2 > 1; 1.0 is not
    assert model["difference"]["mean"] == pytest.approx((1.7 - 1.1 + 0.0) / 3)
    for source in (gold, model):
        for side in ("candidate", "baseline", "difference"):
            s = source[side]
            assert s["mean_ci_low"] <= s["mean"] <= s["mean_ci_high"]
    json.dumps(section, allow_nan=False)

    # Items judged without the cost model's scores are left out of its numbers only.
    rows = [dict(ROWS[0]), *ROWS[1:]]
    del rows[0]["candidate_cost"]
    section = cost_section(rows, plan, samples=50, confidence=0.95, seed=0)
    assert section["sources"]["model"]["n"] == 2 and section["sources"]["gold"]["n"] == 3
    empty = cost_section([], plan, samples=50, confidence=0.95, seed=0)
    assert empty["sources"]["gold"]["n"] == 0
    assert empty["sources"]["gold"]["candidate"]["mean"] is None
    assert cost_section(ROWS, CostPlan(False, None, None, None), 50, 0.95, 0) is None


def _cfg():
    return OmegaConf.create({"judge": {"kind": "gold"}, "batch_size": 2, "seed": 0,
                             "bootstrap_samples": 200, "confidence": 0.95})


class _Judge:
    def judge(self, pairs):
        return [{"outcome": 0.5 if same else 1.0} for same in pairs.same]


def test_eval_stores_costs_per_item_and_reports_them(tmp_path, monkeypatch):
    """Generation is replaced by fixed texts; the rest of `red eval`'s path runs: judging and
    costing each batch, generations.jsonl, eval.json's cost section, the printed tables."""
    texts = {"cand": [r["candidate"] for r in ROWS], "base": [r["baseline"] for r in ROWS]}
    prompts = [r["prompt"] for r in ROWS]

    def fake_sample(side, batch, seed, device):
        idx = [prompts.index(p) for p in batch]
        return _rollout(batch, [texts[side.tokenizer][i] for i in idx])

    monkeypatch.setattr(evaluate, "sample", fake_sample)
    meter = CostMeter(lambda rollout, tok: [float(len(r)) for r in rollout.responses])
    side = {k: SimpleNamespace(tokenizer=k) for k in texts}
    cfg, done = _cfg(), {}
    evaluate._judge_all(cfg, side["cand"], side["base"], _Judge(), meter, prompts, done, "cpu",
                        tmp_path)
    lines = (tmp_path / "generations.jsonl").read_text().splitlines()
    stored = [json.loads(line) for line in lines]
    assert [r["candidate_cost"] for r in stored] == [float(len(t)) for t in texts["cand"]]
    assert [r["baseline_cost"] for r in stored] == [float(len(t)) for t in texts["base"]]

    spec = PolicySpec("run_a", "/x", "/x")
    plan = CostPlan(True, SimpleNamespace(path="toy:cost_model"), 1.0, "cost_limit")
    result = evaluate._result(cfg, stored, spec, PolicySpec("sft", "/y", "/y"), tmp_path, plan)
    assert result["cost"]["sources"]["gold"]["candidate"]["mean"] == pytest.approx(4 / 3)
    printed = evaluate.format_result(result)
    assert "| cost | side | n | mean | 95% CI | share > 1 | 95% CI |" in printed
    assert "| gold | candidate − baseline | 3 | 0.333 |" in printed
    assert "| cost model | candidate | 3 |" in printed
    assert "limit 1 from `cost_limit`" in printed

    # Without a cost source: no cost key, the table as before; gold only: no share columns.
    plain = evaluate._result(cfg, stored, spec, spec, tmp_path, CostPlan(False, None, None, None))
    assert "cost" not in plain and "| cost |" not in evaluate.format_result(plain)
    gold_only = evaluate._result(cfg, stored, spec, spec, tmp_path,
                                 CostPlan(True, None, None, None))
    printed = evaluate.format_result(gold_only)
    assert "| cost | side | n | mean | 95% CI |\n" in printed and "cost model" not in printed
    assert "no limit (set one with cost_limit=...)" in printed


def test_cost_limit_must_be_finite():
    from hydra import compose, initialize_config_dir

    from red_cli.config import conf_dir, register_configs, register_resolvers
    from red_cli.config.checks import validate_eval
    from red_cli.errors import ConfigError

    register_resolvers()
    register_configs()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3", job_name="test"):
        ok = compose("eval", overrides=["run=x", "cost_limit=0.25"])
        bad = compose("eval", overrides=["run=x", "cost_limit=inf"])
    validate_eval(ok)
    with pytest.raises(ConfigError, match=r"cost_limit=inf: must be a finite number or null"):
        validate_eval(bad)
