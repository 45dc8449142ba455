"""`red eval`: generations of a candidate and a baseline on the same prompts -> judge -> win rate.

1. sides (``red_cli.eval.sides``): the candidate is a run directory (its ``checkpoints/final_policy``) or a model
   path; the baseline is ``sft`` (the policy the candidate run started from), another run,
   or a model path;
2. prompts: the first ``prompts.n`` usable prompts of the eval split (the run's
   ``dataset.eval_path`` unless overridden);
3. generation: batch k of prompts is sampled with the seed ``batch_seed(seed, k)`` on BOTH
   sides, with the run's sampling settings, so both sides see the same prompts and seeds and
   the same ``seed`` reproduces every response;
4. judging: a score judge scores each response (ties within ``tie_margin``), the llm judge
   compares each pair in both orders (``red_cli.eval.judges``); the run's cost model, if it
   has one, scores both sides too (``red_cli.eval.cost``);
5. statistics: win rate with ties as half, a percentile bootstrap interval over prompts;
   with a cost model or on toy prompts, each side's mean cost and share over the limit.

Every judged item is appended to ``generations.jsonl`` as soon as its batch is done, so an
interrupted evaluation resumes where it stopped: finished items are neither generated nor
judged again (``red_cli.eval.store``; ``eval_config.yaml`` records the settings a resume must
match).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from red_cli import runtime
from red_cli.errors import EvalError, JudgeError
from red_cli.eval import store
from red_cli.eval.cost import CostMeter, CostPlan, cost_plan, cost_section, format_costs
from red_cli.eval.judges import (
    DEFAULT_QUESTION,
    Judge,
    Pairs,
    build_judge,
    judge_label,
    load_rm_preset,
)
from red_cli.eval.sides import (
    SFT_NEEDS_RUN,
    LoadedPolicy,
    PolicySpec,
    baseline_spec,
    batch_seed,
    candidate_spec,
    check_local_path,
    load_side,
    prompt_settings,
    read_prompts,
    sample,
    sampling_settings,
    toy_settings,
    usable_prompts,
)
from red_cli.eval.stats import summarize
from red_cli.eval.tables import fmt, markdown_table
from red_cli.runs import RunInfo, load_run
from red_cli.toy import is_toy

log = logging.getLogger("red")


def output_dir(cfg: DictConfig, cand: PolicySpec, base: PolicySpec, run: RunInfo | None) -> Path:
    if cfg.output_dir:
        return Path(cfg.output_dir)
    name = f"{judge_label(cfg.judge)}_vs_{base.label}"
    if run is not None:
        return run.dir / "eval" / name
    return Path("outputs") / "eval" / cand.label / name


def run_eval(cfg: DictConfig) -> dict:
    """Evaluate as configured; write eval.json, generations.jsonl; return the eval.json dict."""
    device = runtime.pick_device(cfg.device)
    check_local_path(cfg.run, "run")
    if cfg.baseline == "sft" and load_run(cfg.run) is None:
        raise EvalError(SFT_NEEDS_RUN)  # before a `toy:` candidate path builds the toy world
    cand_spec, run = candidate_spec(cfg.run, cfg.toy)
    toy = toy_settings(run, cfg.toy)
    base_spec = baseline_spec(cfg.baseline, cand_spec, run, toy)
    prompt_cfg = prompt_settings(cfg.prompts, run, cfg.prompts.n)
    sampling = sampling_settings(cfg.sampling, run)
    if cfg.judge.kind == "gold" and not is_toy(prompt_cfg["path"]):
        log.warning("judge=gold is the toy world's sentiment judge; prompts %s are not the toy's",
                    prompt_cfg["path"])
    if cfg.judge.kind == "llm" and not cfg.judge.question:
        default = run.cfg.dataset.get("judge_question") if run is not None else None
        cfg.judge.question = default or DEFAULT_QUESTION
    if cfg.judge.kind == "reward_model":
        rm_path = load_rm_preset(cfg.judge.preset, cfg.judge.path).path  # a bad preset fails here
        if run is not None and rm_path == run.cfg.reward_model.path:
            log.warning("judge=reward_model scores with %s, the reward model the run was trained "
                        "against: its win rate measures optimisation, not quality", rm_path)

    plan = cost_plan(cfg.cost_limit, run, prompt_cfg["path"])

    out = output_dir(cfg, cand_spec, base_spec, run)
    cost_model = plan.model.path if plan.model is not None else None
    # Loaded first: the fingerprint holds the backend `generation=auto` picks for it.
    cand = load_side(cand_spec, device, cfg.generation, sampling)
    done = store.prepare(out, store.fingerprint(cfg, cand_spec, base_spec, prompt_cfg, sampling,
                                                cost_model, cand.generator.name), cfg.overwrite)
    texts = read_prompts(prompt_cfg, toy)
    prompts = usable_prompts(texts, cand.tokenizer, prompt_cfg["n"],
                             prompt_cfg["max_prompt_length"], cand_spec.use_chat_template)
    if len(prompts) < prompt_cfg["n"]:
        log.warning("prompts.n=%d but only %d usable prompts in %s", prompt_cfg["n"],
                    len(prompts), prompt_cfg["path"])
    for i, row in done.items():
        if i < len(prompts) and row["prompt"] != prompts[i]:
            raise EvalError(f"{out}/generations.jsonl: item {i} was judged on another prompt "
                            f"({row['prompt']!r}); pass overwrite=true to start again")
    todo = [i for i in range(len(prompts)) if i not in done]
    log.info("eval %s vs %s, judge %s: %d prompts (%d already judged) -> %s", cand_spec.label,
             base_spec.label, judge_label(cfg.judge), len(prompts), len(prompts) - len(todo), out)

    if todo:
        judge = build_judge(cfg.judge, toy, device, cfg.tie_margin)
        judge.check()
        meter = CostMeter.load(plan.model, toy, device) if plan.model is not None else None
        base = load_side(base_spec, device, cfg.generation, sampling)
        try:
            _judge_all(cfg, cand, base, judge, meter, prompts, done, device, out)
        except JudgeError as err:
            raise JudgeError(f"{err}\n{len(done)} of {len(prompts)} items are saved in {out}; "
                             "the same command resumes from there") from err

    rows = [done[i] for i in range(len(prompts)) if i in done]
    result = _result(cfg, rows, cand_spec, base_spec, out, plan)
    (out / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    print(format_result(result))
    return result


def _judge_all(cfg: DictConfig, cand: LoadedPolicy, base: LoadedPolicy, judge: Judge,
               meter: CostMeter | None, prompts: list[str], done: dict[int, dict], device: str,
               out: Path) -> None:
    """Generate and judge (and cost, with a ``meter``) every unfinished batch, appending
    finished items as they come."""
    with (out / "generations.jsonl").open("a") as f:
        for k in range(0, len(prompts), cfg.batch_size):
            idx = list(range(k, min(k + cfg.batch_size, len(prompts))))
            if all(i in done for i in idx):
                continue
            seed = batch_seed(cfg.seed, k // cfg.batch_size)
            batch = [prompts[i] for i in idx]
            cand_out = sample(cand, batch, seed, device)
            base_out = sample(base, batch, seed, device)
            # The same text is the same answer: a tie, whatever float noise (padding, batch
            # composition) a scorer adds, and no request to a paid judge.
            same = [c == b for c, b in zip(cand_out.responses, base_out.responses)]
            pairs = Pairs(batch, cand_out, cand.tokenizer, base_out, base.tokenizer, same)
            verdicts = judge.judge(pairs)
            costs = meter(pairs) if meter is not None else [{} for _ in batch]
            for j, (i, verdict) in enumerate(zip(idx, verdicts)):
                if i not in done:
                    done[i] = {"index": i, "seed": seed, "prompt": batch[j],
                               "candidate": cand_out.responses[j],
                               "baseline": base_out.responses[j], **verdict, **costs[j]}
                    f.write(json.dumps(done[i]) + "\n")
            f.flush()


def _result(cfg: DictConfig, rows: list[dict], cand: PolicySpec, base: PolicySpec,
            out: Path, plan: CostPlan) -> dict:
    outcomes = [r["outcome"] for r in rows if r["outcome"] is not None]
    stats = summarize(outcomes, cfg.bootstrap_samples, cfg.confidence, cfg.seed)

    def mean(key: str) -> float | None:
        vals = [r[key] for r in rows if r.get(key) is not None]
        return float(np.mean(vals)) if vals else None

    stats = stats._replace(**{k: None for k in ("win_rate", "ci_low", "ci_high")
                              if math.isnan(getattr(stats, k))})  # n = 0: JSON has no NaN
    result = {
        "judge": judge_label(cfg.judge),
        "candidate": cand.label, "candidate_path": cand.path,
        "baseline": base.label, "baseline_path": base.path,
        **stats._asdict(),
        "confidence": float(cfg.confidence), "bootstrap_samples": int(cfg.bootstrap_samples),
        "malformed": int(sum(r.get("malformed", 0) for r in rows)),
        "unjudged": len(rows) - len(outcomes),
        "candidate_mean": mean("candidate_score"), "baseline_mean": mean("baseline_score"),
        "seed": int(cfg.seed), "output_dir": str(out),
    }
    section = cost_section(rows, plan, cfg.bootstrap_samples, cfg.confidence, cfg.seed)
    if section is not None:
        result["cost"] = section
    return result


def format_result(result: dict) -> str:
    """The console table of one evaluation (Markdown), and its cost table if it has one."""
    pct = round(100 * result["confidence"])
    headers = ["judge", "candidate", "baseline", "n", "wins", "ties", "losses", "malformed",
               "win rate", f"{pct}% CI", "candidate mean", "baseline mean"]
    row = [result["judge"], result["candidate"], result["baseline"], result["n"], result["wins"],
           result["ties"], result["losses"], result["malformed"], fmt(result["win_rate"]),
           f"[{fmt(result['ci_low'])}, {fmt(result['ci_high'])}]",
           fmt(result["candidate_mean"]), fmt(result["baseline_mean"])]
    text = markdown_table(headers, [row])
    if "cost" in result:
        text += "\n" + format_costs(result["cost"], result["confidence"])
    return text
