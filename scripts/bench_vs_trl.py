"""red vs TRL's PPOTrainer, side by side on the same local models, prompts and shapes.

    python scripts/bench_vs_trl.py                  # both shapes, 5 rounds of 12 iterations
                                                    # (~15 min on 2 quiet cores)
    python scripts/bench_vs_trl.py --shape small --rounds 3
    python scripts/bench_vs_trl.py --rounds 1 --iterations 3 --warmup 1   # does it run? (~3 min)

TRL runs in its own virtual environment (default .venv-trl, see --trl-python), made once:

    python3.11 -m venv .venv-trl
    .venv-trl/bin/pip install 'trl==1.12.*' 'torch==2.13.0' 'transformers==5.23.0'

trl 1.12 is the last release with PPO (`trl.experimental.ppo.PPOTrainer`); torch is pinned
to the CPU build red's venv has (unpinned, pip pulls a multi-GB CUDA build).

## What runs

The models (written once per shape under --workdir): a random-init GPT-2 of 1.34M parameters
(n_embd 128, 6 layers, 4 heads, 128 positions, the toy task's 1,024-token BPE vocabulary,
LM head tied to the embeddings) as the policy, and a GPT-2 sequence classifier of the same
shapes (one label, its own random init) as the reward model; both sides start the value
model from the reward model and the reference from the policy. The tokenizer is the toy
task's (pad 0 != eos 2, left padding; red builds the toy world on first use, ~2-3 min once
per machine, cached under $RED_CACHE). The prompts: the first `batch` prompts of the toy task
(2-6 words, at most 16 tokens), the same file on both sides, so every iteration of both
sides samples from exactly the same `batch` prompts (in a shuffled order) with the same
left-padded width. A random policy samples EOS with p ~ 1/1024 per token, so nearly every
response runs to `new_tokens` on both sides (about one EOS per 1,000 response tokens; the
report shows red's mean response length and TRL's mean EOS count per iteration).

  shape  small: batch 16 x 24 new tokens;  large: batch 32 x 48 new tokens.
  both:  4 PPO epochs, 1 mini batch (= the whole rollout, so one optimiser step per model per
         epoch), the rollout forwards in one chunk, fp32, CPU, `--threads` torch threads,
         temperature 1, k1 KL with coefficient 0.05, GAE (gamma 1, lambda 0.95), advantages
         whitened, clip 0.2, value clip 0.2, vf_coef 0.1, lr 3e-5.

red (`red train`, the real command, in a child process of this script, --red-python):
    red train policy.path=WD/policy reward_model.path=WD/rm dataset.path=WD/prompts.jsonl
      redistribution=sparse ppo.rollout_batch_size=B ppo.mini_batch_size=B
      ppo.micro_batch_size=B ppo.ppo_epochs=4 ppo.max_new_tokens=T logger=disabled
      checkpoint_every=sample_every=10**6 threads=K device=cpu
  per iteration: generate (HF `generate`, dynamic KV cache, no scores kept); forwards: the
  policy's old logprobs, the reference's logprobs and the critic's values (LM head on the
  response positions only); score: one RM forward, the mode (`sparse`: the score on the last
  token; `--mode` picks another), minus kl_coef x KL per token; GAE; 4 epochs of: policy
  forward + backward + step, then critic forward + backward + step (two DeepSpeed ZeRO-0
  engines, torch AdamW foreach, each step clipping the gradient norm to ppo.max_grad_norm=1,
  which TRL's PPO loop does not do); metrics (objective/*, ppo/*; no wandb). It also runs
  under `torch.use_deterministic_algorithms` (as `red train` always does on CPU).
TRL (`PPOTrainer.train()` as shipped, in TRL's venv, scripts/trl_ppo_runner.py):
    PPOConfig(per_device_train_batch_size=B, gradient_accumulation_steps=1,
      num_mini_batches=1, num_ppo_epochs=4, local_rollout_forward_batch_size=B,
      response_length=T, stop_token="eos", temperature=1.0, bf16=False, use_cpu=True,
      num_sample_generations=0, save_strategy="no", report_to="none")
  per iteration: generate (HF `generate` with output_scores=True: the sampled tokens' logits
  [B, T, V] are kept and give the old logprobs, so TRL has no separate policy forward);
  forwards: the reference's logprobs (LM head on every position), the value model's values,
  the RM's score (after truncating at EOS); the KL-in-reward (score on the last token, minus
  kl_coef x k1 per token: the same as red's `sparse`), GAE (a Python loop over T), whitening;
  4 epochs of one forward of policy + value model together (output_hidden_states=True, LM
  head on every position), one backward of pg_loss + vf_coef x vf_loss, one step of a single
  AdamW (transformers' default `adamw_torch_fused`) over both models, entropy of the full
  logits (no grad); metrics gathered and logged through the Trainer's callbacks; and, what
  red does not do, `gc.collect()` twice (after the rollout and after the update: each a
  full collection that walks every object Python tracks, ~420k in TRL's process) and
  `empty_cache()` (torch.cuda.empty_cache: nothing on CPU) 10 times.
TRL-gc-frozen: the same run with `gc.collect(); gc.freeze()` after the trainer is built:
  TRL's full collections then skip every object that existed before training (torch,
  transformers, datasets, pandas, the models...) and only walk what the loop allocated.
  The phase `gc_collect` of either TRL side is what those collections cost per iteration.

Not in either side's iteration time: start-up (imports, model loading, DeepSpeed's or
Accelerate's setup) and the end of the run (red saves a final checkpoint and policy).

## How it is timed

Both sides stamp time.perf_counter() once per iteration at the same point, where the
iteration's metrics are handed to the logger (red: MetricsLogger.log, patched in the child
process to add the stamp to metrics.jsonl; TRL: a TrainerCallback's on_step_end), and an
iteration's time is the difference between consecutive stamps: everything either side does
once per iteration, its logging included. The first --warmup iterations of every run are
dropped; a run's time is the median of the rest. A round runs red, TRL and TRL-gc-frozen
once each, one after the other, each a fresh process (the order rotates between rounds); the
speed-up is the median over rounds of the per-round ratio TRL s/it / red s/it (paired:
the machine's drift hits both sides of a pair alike). Phase times are medians too: red's come
from metrics.jsonl (time/rollout, time/forward, time/score, time/update), TRL's from thin
timers around the functions its loop calls (batch_generation, forward, get_reward, gc.collect).

Run it on a quiet machine: another process on the cores makes torch's OpenMP threads wait
for each other (docs/PERFORMANCE.md, "Threads on a shared machine"), and hits whichever run
is going at the time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHAPES = {"small": dict(batch=16, new_tokens=24), "large": dict(batch=32, new_tokens=48)}
# ~1.3M parameters with the toy tokenizer's 1,024 tokens (tied LM head): 1,337,344.
MODEL = dict(n_embd=128, n_layer=6, n_head=4, n_positions=128)
MAX_PROMPT_TOKENS = 16
SIDES = ("red", "trl", "trl-gc-frozen")
RED_PHASES = {"generate": "time/rollout", "forwards": "time/forward", "score": "time/score",
              "update": "time/update"}


# ------------------------------------------------------------------------------ setup
def prepare(workdir: Path, batch: int, seed: int) -> dict:
    """Policy, RM, tokenizer and prompts in ``workdir`` (kept if already there)."""
    marker = workdir / "prepared.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("batch") == batch and info.get("model") == MODEL and info.get("seed") == seed:
            return info
    sys.path.insert(0, str(REPO))
    import torch
    from transformers import (
        AutoTokenizer,
        GPT2Config,
        GPT2ForSequenceClassification,
        GPT2LMHeadModel,
    )

    from red_cli.data.prompts import encode_prompt
    from red_cli.toy import resolve_path

    print(f"preparing {workdir} (the toy world is built on first use)", file=sys.stderr,
          flush=True)
    tok_dir = resolve_path("toy:policy")
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    tokenizer.padding_side = "left"
    common = dict(MODEL, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    torch.manual_seed(seed)
    policy = GPT2LMHeadModel(GPT2Config(**common))
    torch.manual_seed(seed + 1)
    rm = GPT2ForSequenceClassification(GPT2Config(**common, num_labels=1))
    for name, model in (("policy", policy), ("rm", rm)):
        model.save_pretrained(workdir / name)
        tokenizer.save_pretrained(workdir / name)
    prompts = []
    with open(resolve_path("toy:prompts_train")) as f:
        for line in f:
            p = json.loads(line)["prompt"]
            if 0 < len(encode_prompt(tokenizer, p)) <= MAX_PROMPT_TOKENS:
                prompts.append(p)
            if len(prompts) == batch:
                break
    (workdir / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n"
                                                   for p in prompts))
    info = {"batch": batch, "model": MODEL, "seed": seed,
            "policy_params": sum(p.numel() for p in policy.parameters()),
            "rm_params": sum(p.numel() for p in rm.parameters()),
            "vocab": len(tokenizer),
            "prompt_tokens": [len(encode_prompt(tokenizer, p)) for p in prompts]}
    marker.write_text(json.dumps(info))
    return info


def child_env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(HF_HUB_OFFLINE="1", WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false")
    return env


# ------------------------------------------------------------------------------ red
def red_child(out: str, overrides: list[str]) -> None:
    """In the child process: `red train OVERRIDES`, with a perf_counter stamp added to every
    metrics.jsonl line (as `time/wall_stamp`) at the moment the loop logs it."""
    sys.path.insert(0, str(REPO))
    from red_cli.cli import main as red_main
    from red_cli.train.metrics import MetricsLogger

    original = MetricsLogger.log

    def log(self, iteration, values):
        return original(self, iteration, {**values, "time/wall_stamp": time.perf_counter()})

    MetricsLogger.log = log
    red_main(["train", *overrides])
    Path(out).write_text("done\n")


def run_red(args, shape: dict, workdir: Path, tag: str) -> dict:
    run_dir = workdir / "runs" / tag
    shutil.rmtree(run_dir, ignore_errors=True)
    b, t = shape["batch"], shape["new_tokens"]
    overrides = [
        f"policy.path={workdir / 'policy'}", f"reward_model.path={workdir / 'rm'}",
        "reward_model.name=bench", f"dataset.path={workdir / 'prompts.jsonl'}",
        f"dataset.eval_path={workdir / 'prompts.jsonl'}",
        f"dataset.max_prompt_length={MAX_PROMPT_TOKENS}",
        f"redistribution={args.mode}", f"ppo.rollout_batch_size={b}", f"ppo.mini_batch_size={b}",
        f"ppo.micro_batch_size={b}", f"ppo.ppo_epochs={args.epochs}", f"ppo.max_new_tokens={t}",
        f"ppo.iterations={args.iterations}", "logger=disabled", "logger.progress_bar=false",
        "checkpoint_every=1000000", "sample_every=1000000", f"threads={args.threads}",
        "device=cpu", f"seed={args.seed}", f"hydra.run.dir={run_dir}", *args.red_override,
    ]
    done = workdir / "runs" / f"{tag}.done"
    done.unlink(missing_ok=True)
    cmd = [args.red_python, str(Path(__file__).resolve()), "--red-child", str(done), "--",
           *overrides]
    proc = subprocess.run(cmd, cwd=REPO, env=child_env(), capture_output=True, text=True)
    if proc.returncode != 0 or not done.exists():
        raise SystemExit(f"red run failed ({proc.returncode}): {' '.join(cmd)}\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if line.strip()]
    stamps = [r["time/wall_stamp"] for r in rows]
    its = [rows[0]["time/iteration"]] + [b_ - a for a, b_ in zip(stamps, stamps[1:])]
    phases = [{ph: r[key] for ph, key in RED_PHASES.items()} for r in rows]
    for it, ph in zip(its, phases):
        # GAE, metrics, logging, the checkpoint check: the iteration less its timed phases.
        ph["other"] = it - sum(ph[k] for k in RED_PHASES)
    return {"iteration_s": its, "phases": phases,
            "response_length": statistics.mean(r["objective/response_length"] for r in rows)}


# ------------------------------------------------------------------------------ TRL
def run_trl(args, shape: dict, workdir: Path, tag: str, freeze: bool) -> dict:
    out = workdir / "runs" / f"{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    cmd = [args.trl_python, str(REPO / "scripts" / "trl_ppo_runner.py"), "--workdir",
           str(workdir), "--batch", str(shape["batch"]), "--new-tokens", str(shape["new_tokens"]),
           "--epochs", str(args.epochs), "--iterations", str(args.iterations), "--threads",
           str(args.threads), "--seed", str(args.seed), "--out", str(out)]
    if freeze:
        cmd.append("--gc-freeze")
    proc = subprocess.run(cmd, cwd=REPO, env=child_env(), capture_output=True, text=True)
    if proc.returncode != 0 or not out.exists():
        raise SystemExit(f"TRL run failed ({proc.returncode}): {' '.join(cmd)}\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    rec = json.loads(out.read_text())
    phases = []
    for it, raw in zip(rec["iteration_s"], rec["phases"]):
        ph = {k: raw.get(k, 0.0) for k in ("generate", "forwards", "gc_collect")}
        # The rest: the KL-in-reward, GAE, whitening, the 4 PPO epochs, metrics and logging.
        ph["update"] = it - sum(ph.values())
        ph["update_forwards"] = raw.get("update_forward", 0.0)  # the epochs' forwards alone
        phases.append(ph)
    rec["phases"] = phases
    return rec


# ------------------------------------------------------------------------------ report
def med(xs):
    return statistics.median(xs) if xs else float("nan")


def summarise(run: dict, warmup: int) -> dict:
    its = run["iteration_s"][warmup:]
    phases = run["phases"][warmup:]
    keys = list(phases[0]) if phases else []
    return {"s_per_it": med(its), "n": len(its),
            "phases": {k: med([p.get(k, 0.0) for p in phases]) for k in keys}}


def report(shape_name: str, shape: dict, info: dict, results: dict, warmup: int) -> str:
    s = {side: [summarise(r, warmup) for r in runs] for side, runs in results.items()}
    per_it = {side: med([x["s_per_it"] for x in xs]) for side, xs in s.items()}
    ratio = {side: med([t["s_per_it"] / r["s_per_it"] for t, r in zip(s[side], s["red"])])
             for side in ("trl", "trl-gc-frozen")}
    n_rounds = len(s["red"])
    lines = [
        f"### {shape_name}: batch {shape['batch']} x {shape['new_tokens']} new tokens; GPT-2 "
        f"{info['policy_params'] / 1e6:.2f}M (n_embd {MODEL['n_embd']}, {MODEL['n_layer']} "
        f"layers, vocab {info['vocab']}); {n_rounds} round(s), medians of "
        f"{s['red'][0]['n']} iterations per run after {warmup} warm-up",
        "",
        "| shape | red s/it | TRL s/it | TRL-gc-frozen s/it | red speed-up vs TRL "
        "| red speed-up vs TRL-gc-frozen |",
        "|---|---|---|---|---|---|",
        f"| {shape['batch']} x {shape['new_tokens']} | {per_it['red']:.3f} | {per_it['trl']:.3f} "
        f"| {per_it['trl-gc-frozen']:.3f} | {ratio['trl']:.2f}x | {ratio['trl-gc-frozen']:.2f}x |",
        "",
        "Phases, median s per iteration over all runs of a side (red: generate; forwards = "
        "policy, reference, critic; score = RM, mode, KL; update = the PPO epochs; other = GAE, "
        "metrics, logging. TRL: generate (+ old logprobs from its scores); forwards = "
        "reference, value model, RM; gc_collect; update = everything else: KL reward, GAE, "
        "the PPO epochs, metrics, logging; update_forwards = the epochs' forwards alone):",
    ]
    for side, xs in s.items():
        keys = list(xs[0]["phases"])
        parts = [f"{k} {med([x['phases'].get(k, 0.0) for x in xs]):.3f}" for k in keys]
        lines.append(f"- {side}: " + ", ".join(parts))
    trl = results["trl"][0]
    eos = [e for r in results["trl"] for e in r["eos_tokens_per_iteration"]]
    eos = statistics.mean(eos) if eos else float("nan")
    frozen = results["trl-gc-frozen"][0]
    lines.append(f"TRL's heap: {trl['gc_tracked_objects']:,} objects tracked by gc at the end "
                 f"of a run, each walked by every gc.collect(); frozen: "
                 f"{frozen['gc_frozen_objects']:,} moved out of its reach, "
                 f"{frozen['gc_tracked_objects']:,} left. Responses: red mean length "
                 f"{med([r['response_length'] for r in results['red']]):.1f} of "
                 f"{shape['new_tokens']} tokens; TRL {eos:.1f} EOS per iteration in "
                 f"{shape['batch']} responses.")
    lines.append("")
    lines.append("Per round, s/it (red / TRL / TRL-gc-frozen): " + "; ".join(
        f"{a['s_per_it']:.3f} / {b['s_per_it']:.3f} / {c['s_per_it']:.3f}"
        for a, b, c in zip(s["red"], s["trl"], s["trl-gc-frozen"])))
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--red-child":
        sep = sys.argv.index("--")
        red_child(sys.argv[2], sys.argv[sep + 1:])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=("small", "large", "both"), default="both")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=12, help="PPO iterations per run")
    ap.add_argument("--warmup", type=int, default=2, help="iterations dropped from each run")
    ap.add_argument("--threads", type=int, default=2, help="torch threads, both sides")
    ap.add_argument("--epochs", type=int, default=4, help="PPO epochs")
    ap.add_argument("--mode", default="sparse", help="red's redistribution (TRL: sparse)")
    ap.add_argument("--red-override", action="append", default=[], metavar="KEY=VALUE",
                    help="an extra `red train` override (repeatable), e.g. "
                         "generation=static generation.static.compile=on")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=REPO / "outputs" / "bench_vs_trl")
    ap.add_argument("--red-python", default=sys.executable)
    ap.add_argument("--trl-python", default=str(REPO / ".venv-trl" / "bin" / "python"))
    args = ap.parse_args()
    if args.warmup < 1 or args.iterations <= args.warmup:
        # red's first iteration has no stamp before it to be timed from.
        ap.error("--warmup must be at least 1 and less than --iterations")
    if not Path(args.trl_python).exists():
        ap.error(f"no TRL python at {args.trl_python}: make TRL's venv (this file's docstring)")
    shapes = ["small", "large"] if args.shape == "both" else [args.shape]
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; {args.threads} "
          f"threads; red mode {args.mode}"
          + (f"; red overrides {' '.join(args.red_override)}" if args.red_override else ""),
          flush=True)
    out = {}
    t_start = time.time()
    for name in shapes:
        shape = SHAPES[name]
        workdir = args.workdir / name
        info = prepare(workdir, shape["batch"], args.seed)
        results = {side: [] for side in SIDES}
        for r in range(args.rounds):
            order = SIDES[r % len(SIDES):] + SIDES[:r % len(SIDES)]
            for side in order:
                t0 = time.time()
                if side == "red":
                    res = run_red(args, shape, workdir, f"red_r{r}")
                else:
                    res = run_trl(args, shape, workdir, f"{side}_r{r}", side == "trl-gc-frozen")
                results[side].append(res)
                print(f"  {name} round {r + 1}/{args.rounds} {side}: "
                      f"{summarise(res, args.warmup)['s_per_it']:.3f} s/it "
                      f"({time.time() - t0:.0f} s wall)", file=sys.stderr, flush=True)
        print(report(name, shape, info, results, args.warmup), "\n", flush=True)
        out[name] = {"shape": shape, "info": info, "results": results}
    trl_versions = next((r["versions"] for s in out.values() for r in s["results"]["trl"]), {})
    print(f"TRL side: {trl_versions}; total {time.time() - t_start:.0f} s", flush=True)
    (args.workdir / "results.json").write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "shapes": out}, indent=1))


if __name__ == "__main__":
    main()
