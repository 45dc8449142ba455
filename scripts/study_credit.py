"""When does dense credit help? The study behind docs/RESULTS.md.

    python scripts/study_credit.py                      # the three questions (docs/RESULTS.md)
    python scripts/study_credit.py --questions critic --seeds 2 --out outputs/study_small

Q1 "critic" (the default toy task, 100 iterations): redistribution sparse / td / abc /
uniform x three ways of estimating advantages: gae with the critic started from the reward
model (red's default), gae with the critic started from the policy (it knows nothing), and
reinforce_pp (no critic) x `--seeds` seeds.

Q2 "horizon": `--horizon-modes` (sparse / td / abc) x the default toy task vs the long-horizon one
(experiment=toy_long: 5-8 sentence reviews, up to 96 new tokens) under `--horizon-estimator`
x `--horizon-seeds` seeds. The default-horizon runs are Q1's, not run twice.

Q3 "safety" (the toy safety world, experiment=toy_safe): sparse / td x constrained
(PPO-Lagrangian, the preset's cost limit) vs unconstrained (`ppo.lagrangian.lambda_init=0`:
same models, the cost measured, lambda held at 0) x `--safety-seeds` seeds, red's default
estimator (gae, critics from the reward and cost models). Its summary adds the final cost,
gold cost and lambda.

Per run: `red eval RUN judge=gold prompts.n=N` (vs its SFT policy). Per question: `red report`
(final and mean gold, iterations until the smoothed gold reaches `--threshold`, win rate vs
SFT, final KL) into OUT/<question>/ (and OUT/<question>/<estimator or horizon>/, a figure
each), and OUT/<question>/summary.json with every run's
numbers. Resumable: a finished run or evaluation is skipped, a stopped run is resumed.
`--jobs` runs at once, each with cores / jobs torch threads.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runs import gold_eval, red, run_steps, status, threads_per_job  # noqa: E402

# name -> the overrides of one way to estimate advantages.
ESTIMATORS = {
    "gae_rm_critic": ["ppo.estimator=gae", "ppo.critic_init=reward_model"],
    "gae_policy_critic": ["ppo.estimator=gae", "ppo.critic_init=policy"],
    "reinforce_pp": ["ppo.estimator=reinforce_pp"],
}
HORIZONS = {"default": ["experiment=reproduce"], "long": ["experiment=toy_long"]}
CONSTRAINTS = {"constrained": [], "unconstrained": ["ppo.lagrangian.lambda_init=0"]}


def runs_of(args) -> dict[str, list[tuple[Path, list[str]]]]:
    out = Path(args.out).resolve()
    plan: dict[str, list[tuple[Path, list[str]]]] = {}
    if "critic" in args.questions:
        plan["critic"] = [
            (out / "runs" / f"default_{est}_{mode}_s{seed}",
             [*HORIZONS["default"], *ESTIMATORS[est], f"redistribution={mode}", f"seed={seed}"])
            for est in ESTIMATORS for mode in ("sparse", "td", "abc", "uniform")
            for seed in range(args.seeds)]
    if "horizon" in args.questions:
        plan["horizon"] = [
            (out / "runs" / f"{horizon}_{args.horizon_estimator}_{mode}_s{seed}",
             [*HORIZONS[horizon], *ESTIMATORS[args.horizon_estimator],
              f"redistribution={mode}", f"seed={seed}"])
            for horizon in HORIZONS for mode in args.horizon_modes.split(",")
            for seed in range(args.horizon_seeds)]
    if "safety" in args.questions:
        plan["safety"] = [
            (out / "runs" / f"safe_{constraint}_{mode}_s{seed}",
             ["experiment=toy_safe", *CONSTRAINTS[constraint], f"redistribution={mode}",
              f"seed={seed}"])
            for constraint in CONSTRAINTS for mode in ("sparse", "td")
            for seed in range(args.safety_seeds)]
    return plan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="outputs/study_credit")
    ap.add_argument("--questions", default="critic,horizon,safety")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--horizon-seeds", type=int, default=3)
    # Q1's answer: where td helped most (docs/RESULTS.md).
    ap.add_argument("--horizon-estimator", default="gae_policy_critic", choices=sorted(ESTIMATORS))
    ap.add_argument("--horizon-modes", default="sparse,td,abc")
    ap.add_argument("--safety-seeds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--eval-prompts", type=int, default=300)
    ap.add_argument("--threshold", type=float, default=0.4)
    ap.add_argument("--smooth", type=int, default=5)
    ap.add_argument("overrides", nargs="*", help="extra `red train` overrides (e.g. ppo.iterations=20)")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    (out / "runs").mkdir(parents=True, exist_ok=True)
    threads = threads_per_job(args.jobs)
    plan = runs_of(args)
    jobs = list(dict.fromkeys((run, tuple(o)) for runs in plan.values() for run, o in runs))
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    worlds = ["default"] + ["long"] * ("horizon" in plan) + ["safe"] * ("safety" in plan)
    for world in worlds:
        red("toy", f"toy={world}", threads=os.cpu_count(), log=out / f"toy_{world}.log")
    timings["toy worlds"] = time.perf_counter() - t0

    def train(job) -> None:
        run, overrides = job
        if status(run) == "complete":
            return
        t = time.perf_counter()
        if run.exists() and not (run / "config.yaml").exists():
            shutil.rmtree(run)
        extra = [f"resume={run}"] if (run / "config.yaml").exists() else \
            [*overrides, *args.overrides, "logger=disabled", "logger.progress_bar=false",
             f"hydra.run.dir={run}"]
        red("train", *extra, threads=threads, log=run.parent / f"train_{run.name}.log")
        print(f"  trained {run.name} in {time.perf_counter() - t:.0f} s", flush=True)

    def evaluate(job) -> None:
        run = job[0]
        gold_eval(run, args.eval_prompts, threads, run.parent / f"eval_{run.name}.log")

    run_steps((("train", train), ("eval", evaluate)), jobs, args.jobs, timings)

    def report(runs: list, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        red("report", *[str(r) for r, _ in runs], f"output_dir={folder}", "overwrite=true",
            f"threshold={args.threshold}", "threshold_metric=gold", f"smooth={args.smooth}",
            f"final_window={args.smooth}", threads=threads, log=folder / "report.log")

    for question, runs in plan.items():
        folder = out / question
        report(runs, folder)
        # One more report per estimator (Q1) or per horizon (Q2): four or three curves a figure.
        part_of = {"critic": lambda run: run.name.split("_", 1)[1].rsplit("_", 2)[0],
                   "horizon": lambda run: run.name.split("_", 1)[0]}.get(question)
        for part in dict.fromkeys(part_of(r) for r, _ in runs) if part_of else ():
            report([(r, o) for r, o in runs if part_of(r) == part], folder / part)
        summary = []
        for run, overrides in runs:
            metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            win = json.loads((run / "eval" / "gold_vs_sft" / "eval.json").read_text())
            last = metrics[-args.smooth:]
            safety = {f"final_{key.split('/')[1]}": sum(m[key] for m in last) / len(last)
                      for key in ("objective/cost", "objective/gold_cost", "lagrange/lambda")
                      if key in metrics[-1]}
            summary.append({
                "run": run.name, "overrides": list(overrides),
                "final_gold": sum(m["objective/gold"] for m in last) / len(last),
                "mean_gold": sum(m["objective/gold"] for m in metrics) / len(metrics),
                "final_kl": sum(m["objective/kl"] for m in last) / len(last),
                "win_rate_vs_sft": win["win_rate"],
                "seconds_per_iteration": sorted(m["time/iteration"] for m in metrics)[len(metrics) // 2],
                **safety,
            })
        (folder / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    timings["total"] = time.perf_counter() - t_start
    (out / "timings.json").write_text(json.dumps(timings, indent=1) + "\n")
    print("wall seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))


if __name__ == "__main__":
    main()
