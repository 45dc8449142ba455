"""`red <verb> --help`: the verb's own config groups and keys, one line each.

Hydra's help lists every group of the config tree (judge and schema/* under `red train`, ppo
and deepspeed under `red eval`); this reads the verb's defaults list instead.
"""

from __future__ import annotations

from pathlib import Path

import yaml

GROUPS = {
    "policy": "the model trained: a hub id, a local folder or toy:policy",
    "reward_model": "the scalar reward model and how it reads a response (template, chat template)",
    "cost_model": "none, or a cost model (safety: PPO-Lagrangian, ppo.lagrangian.*)",
    "dataset": "training prompts and their eval split, read through a hub-format adapter",
    "redistribution": "how the RM score becomes per-token rewards; knobs: redistribution.<mode>.*",
    "generation": "how rollouts are sampled",
    "ppo": "batch sizes, sampling, learning rates, estimator, GAE, clipping, KL, lagrangian",
    "deepspeed": "ZeRO stage, offload, precision",
    "logger": "wandb mode, project, run name and group, console progress bar",
    "launcher": "ranks per node, nodes, torchrun or DeepSpeed's runner",
    "toy": "the embedded task's build sizes and steps (tiny: tests and CI; safe: a cost model)",
    "experiment": "named settings on top of the defaults: the papers' setups, toy runs",
    "judge": "who decides which response is better: gold, reward_model, llm",
}

KEYS = {
    "train": {
        "seed": "one number seeds weights, prompts and sampling",
        "device": "auto | cpu | cuda",
        "threads": "torch threads per process (0: the cores free at start-up; README: Threads)",
        "threads_follow_load": "re-decide threads=0 every iteration (fast, not bit-exact)",
        "resume": "a run directory to continue from its last checkpoint",
        "checkpoint_every": "iterations between checkpoints (and at the end)",
        "sample_every": "iterations between samples/iter_N.jsonl files",
    },
    "eval": {
        "run": "the candidate: a run directory or a model path (`red eval DIR` sets it)",
        "baseline": "sft (the run's starting policy), another run, or a model path",
        "prompts.*": "path, split, column, n, max_prompt_length (null: the run's eval split)",
        "sampling.*": "max_new_tokens, temperature, top_k, top_p (null: the run's ppo.*)",
        "batch_size": "prompts per generation batch; batch k uses seed (seed, k) on both sides",
        "seed": "the sampling seed",
        "tie_margin": "score differences within it count as ties (score judges)",
        "bootstrap_samples": "resamples for the confidence interval",
        "confidence": "the interval's level, e.g. 0.95",
        "device": "auto | cpu | cuda",
        "output_dir": "null: <run>/eval/<judge>_vs_<baseline>/",
        "overwrite": "start again instead of resuming generations.jsonl",
        "cost_limit": "cost counted as over the limit (null: the run's ppo.lagrangian.cost_limit)",
    },
    "report": {
        "runs": "run or multirun directories (`red report DIR ...` sets it)",
        "score_metric": "the metric of the score columns and curves",
        "gold_metric": "the metric of the gold columns",
        "final_window": "the last N logged iterations make the 'final' value",
        "smooth": "moving-average window of curves and threshold crossings",
        "threshold": "iterations until the smoothed metric reaches this",
        "threshold_group": "...or until it reaches this group's final value",
        "threshold_metric": "score | gold",
        "win_rate_judge": "which eval/<judge>_vs_sft results count as win rate vs SFT",
        "band": "se2 | minmax | none: the band around each group's mean curve",
        "ignore_keys": "override keys left out when grouping runs",
        "output_dir": "null: the multirun directory",
        "overwrite": "replace an earlier report in output_dir instead of writing report_N/",
    },
    "explain": {
        "run": "a run directory or a model path (`red explain DIR` sets it)",
        "n_samples": "responses shown",
        "modes": "redistribution modes side by side, e.g. [sparse,td,abc]",
        "reward_model": "null: the run's reward model; else a conf/reward_model preset",
        "prompts.*": "path, split, column, max_prompt_length (null: the run's eval split)",
        "sampling.*": "max_new_tokens, temperature, top_k, top_p (null: the run's ppo.*)",
        "seed": "the sampling seed",
        "device": "auto | cpu | cuda",
        "output_dir": "null: <run>/explain/",
    },
    "toy": {"json": "print the summary as JSON"},
}

EXAMPLES = {
    "train": ["red train redistribution=abc seed=1", "red train -m redistribution=sparse,td,abc seed=0,1,2",
              "red train experiment=abc_imdb redistribution=uniform", "red train resume=RUN_DIR",
              "red train reward_model=toy_xtok ppo.kl_coef=0.1 --cfg job"],
    "eval": ["red eval RUN_DIR", "red eval RUN_A baseline=RUN_B judge=reward_model judge.preset=toy_bidir",
             "red eval RUN_A judge=llm judge.base_url=http://127.0.0.1:8000/v1 judge.model=NAME"],
    "report": ["red report outputs/multirun/DATE/TIME", "red report SWEEP threshold_group=sparse smooth=5"],
    "explain": ["red explain RUN_DIR n_samples=8 modes=[sparse,td,abc]",
                "red explain toy:policy reward_model=toy_xtok"],
    "toy": ["red toy", "red toy toy=tiny json=true"],
}


def _defaults(conf: Path, verb: str) -> dict[str, str | None]:
    """group -> default option of the verb's defaults list (None: no default, e.g. experiment)."""
    out: dict[str, str | None] = {}
    for entry in yaml.safe_load((conf / f"{verb}.yaml").read_text()).get("defaults", []):
        if isinstance(entry, dict):
            (group, option), = entry.items()
            if not group.startswith("override ") and (conf / group).is_dir():
                out[group] = option
    return out


def verb_help(verb: str, summary: str, conf: Path) -> str:
    lines = [f"usage: red {verb} [group=option ...] [key=value ...] [-m] [--cfg job]", "",
             f"red {verb}: {summary}", "", "config groups (group=option; default in brackets):"]
    for group, default in _defaults(conf, verb).items():
        options = sorted(p.stem for p in (conf / group).glob("*.yaml"))
        shown = ", ".join(f"[{o}]" if o == default else o for o in options)
        lines += [f"  {group:<15} {GROUPS.get(group, '')}", f"  {'':<15} {shown}"]
    lines += ["", "keys (key=value; each group's own keys: `<group>.<key>=value`):"]
    lines += [f"  {key:<18} {text}" for key, text in KEYS.get(verb, {}).items()]
    lines += ["", "examples:", *(f"  {e}" for e in EXAMPLES.get(verb, [])), "",
              f"`red {verb} --cfg job` prints the composed config (every key, with -m one per "
              "job); -m sweeps over comma-separated values; hydra.searchpath=[file:///my/conf] "
              "adds your own options. Docs: README.md.", ""]
    return "\n".join(lines)
