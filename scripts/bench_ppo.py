"""Benchmark one PPO iteration, phase by phase, for every redistribution mode side by side.

    python scripts/bench_ppo.py                       # toy + gpt2-small, ~10 min on 2 CPU cores
    python scripts/bench_ppo.py --models toy --rounds 8
    python scripts/bench_ppo.py --compare-update      # also: sparse as the code was before the
                                                      # speed-up of the update (before/after)
    # the GPU phase breakdown at the 355M shapes (issue #17), each phase against its floor:
    python scripts/bench_ppo.py --models gpt2-medium --device cuda --dtype bf16 --modes sparse \
        --rounds 5 --hbm-tbps 4.8 --bf16-tflops 989 --fp32-tflops 67
    # the same code path on CPU at a tiny size (a check that it runs, not a measurement):
    python scripts/bench_ppo.py --models gpt2-tiny --dtype bf16 --modes sparse --rounds 1 \
        --batch 4 --new-tokens 8 --hbm-tbps 0.05 --bf16-tflops 1

What it runs: the same functions `red train` runs (red_cli.generation, red_cli.train.forwards,
red_cli.reward, red_cli.modes, red_cli.rlhf, train.loop._ppo_epochs on DeepSpeed engines
with torch AdamW), on one process.

  toy         the embedded task's SFT policy and causal RM (built on first use, cached)
  gpt2-small  random-init GPT-2 small shapes (768 / 12 layers / 12 heads / vocab 50257) for
              both policy and RM, prompts from the toy task (the toy tokenizer's ids are a
              subset of the vocabulary; a random policy rarely emits EOS, so responses run to
              max_new_tokens: the worst case)
  gpt2-medium the same with GPT-2 medium shapes (1024 / 24 layers / 16 heads / vocab 50257;
              355M parameters each): the GPU shapes of issue #17, rollout 64 x 64 new tokens,
              4 PPO epochs, 1 mini batch of 64 (micro batch 64)
  gpt2-tiny   the same code path at a toy size (64 / 2 layers / 2 heads / vocab 50257), to
              check on CPU that the GPU configuration runs
--batch / --mini-batch / --micro-batch / --epochs / --new-tokens override a model's sizes.

--device cuda runs on the GPU (timings synchronise the device at every phase boundary);
--generation picks the backend as `red train generation=` does (default auto: static, its
decode step in a CUDA graph, on CUDA; hf on CPU); round 0, not timed, compiles it.
--dtype bf16 loads the policy, reference, RM and critic in bfloat16 and trains under
DeepSpeed's bf16 (`deepspeed.precision=bf16 policy.dtype=bfloat16 reward_model.dtype=bfloat16`
in `red train` terms); fp32 is `red train`'s default. --modes picks the modes to run
(default: all; `--modes sparse` for a phase breakdown alone).

Floors (with --hbm-tbps and the peak TFLOP/s of the run's dtype, --bf16-tflops or
--fp32-tflops): the least time the hardware could take for a phase, and each phase's
ratio to it (time / floor; 1.0 would be the hardware's limit):
  generate  per decode step, every weight of the policy read once from memory (params x bytes
            per param / bandwidth), or its arithmetic (2 x params x batch / peak) if larger,
            times the number of decode steps (the longest response); KV-cache reads ignored
  forwards  2 x params x tokens for each of policy, reference and critic / peak
  score     2 x RM params x tokens / peak
  update    6 x params x tokens x epochs for each trained model (policy, critic) / peak
"tokens" are the [prompt | response] tokens of the rollout that are not padding; "params"
are all of a model's parameters (issue #17's formula), embeddings included, which do no
arithmetic in the critic and RM (about 15% of GPT-2 medium's 354M): their floors are a little
high, so their ratios a little flattering.

Each round samples ONE rollout (timed as `generate`), then every mode, in a rotated order,
runs the rest of an iteration on that same rollout: forwards (old logprobs, reference
logprobs, values), reward scoring (RM forward + redistribution + KL), GAE, and the PPO
update (real optimiser steps). The per-mode iteration time is generate + its own phases, so
the modes differ only in what they do differently. Ratios vs sparse are taken within a round
(paired) and the table reports medians over rounds: this machine is noisy, absolute times
drift, paired ratios much less.

Tokens per second: generate counts generated tokens; forwards and update count every
[prompt | response] token the models read (forwards: 3 models; update: 2 models x epochs).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _device_arg() -> str:
    """--device, read before argparse: DeepSpeed picks its accelerator when first imported."""
    argv = sys.argv[1:]
    for i, a in enumerate(argv):
        if a.startswith("--device="):
            return a.split("=", 1)[1]
        if a == "--device" and i + 1 < len(argv):
            return argv[i + 1]
    return "cpu"


os.environ.setdefault("DS_ACCELERATOR", "cuda" if _device_arg() == "cuda" else "cpu")

from red_cli import models  # noqa: E402
from red_cli.config.schema import GenerationConfig, PPOConfig, RewardModelConfig  # noqa: E402
from red_cli.data import PromptStream, load_prompts  # noqa: E402
from red_cli.generation import Rollout, Sampling, build_generator, describe  # noqa: E402
from red_cli.modes import registry  # noqa: E402
from red_cli.reward.pipeline import RewardPipeline  # noqa: E402
from red_cli.reward.shaping import ScoreShaper  # noqa: E402
from red_cli.reward.stack import RewardStack  # noqa: E402
from red_cli.rlhf.kl import add_kl_to_rewards  # noqa: E402
from red_cli.rlhf.masking import position_ids_from_mask  # noqa: E402
from red_cli.toy import resolve_path  # noqa: E402
from red_cli.train import distributed, forwards  # noqa: E402
from red_cli.train.estimators import GAE  # noqa: E402
from red_cli.train.loop import ValueTrack, _ppo_epochs  # noqa: E402
from red_cli.train.setup import derived_sizes  # noqa: E402

MODES = registry()
PHASES = ("generate", "forwards", "score", "update")
# Sizes per model: what `red train`'s default uses for the toy; a shrunken batch for
# gpt2-small so that a round takes seconds, not minutes, on 2 cores.
SIZES = {
    "toy": dict(rollout_batch_size=64, mini_batch_size=32, micro_batch_size=32, ppo_epochs=4,
                max_new_tokens=24),
    "gpt2-small": dict(rollout_batch_size=16, mini_batch_size=8, micro_batch_size=8, ppo_epochs=1,
                       max_new_tokens=32),
}
GPT2_SHAPES = {
    "gpt2-small": dict(n_embd=768, n_layer=12, n_head=12, vocab_size=50257, n_positions=256),
    "gpt2-medium": dict(n_embd=1024, n_layer=24, n_head=16, vocab_size=50257, n_positions=256),
    "gpt2-tiny": dict(n_embd=64, n_layer=2, n_head=2, vocab_size=50257, n_positions=256),
}
SIZES["gpt2-medium"] = dict(rollout_batch_size=64, mini_batch_size=64, micro_batch_size=64,
                            ppo_epochs=4, max_new_tokens=64)
SIZES["gpt2-tiny"] = dict(SIZES["gpt2-medium"])
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
BYTES = {"fp32": 4, "bf16": 2}


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that perf_counter() times it (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(model: str, seed: int, device: torch.device, dtype: str):
    """Policy, reference, RM, tokenizer, critic: as train_ppo builds them."""
    torch.manual_seed(seed)
    tokenizer = models.load_tokenizer(resolve_path("toy:policy"))
    if model == "toy":
        policy = models.load_policy(resolve_path("toy:policy"))
        rm = models.load_reward_model(resolve_path("toy:rm"))
    else:
        from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

        common = dict(GPT2_SHAPES[model], bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        # As models.load_policy / load_reward_model make them (dropout off, GELU fused).
        policy = models.fuse_gelu(models.disable_dropout(GPT2LMHeadModel(GPT2Config(**common))))
        rm = models.freeze(models.fuse_gelu(models.disable_dropout(
            GPT2ForSequenceClassification(GPT2Config(**common, num_labels=1)))))
    # As `red train` loads them with policy.dtype / reward_model.dtype, on the run's device.
    policy = policy.to(device=device, dtype=DTYPES[dtype])
    rm = rm.to(device=device, dtype=DTYPES[dtype])
    reference = models.reference_from(policy)
    critic, _ = models.build_critic("reward_model", rm, policy, True, True)
    return tokenizer, policy, reference, rm, critic


def engines_for(policy, critic, p: PPOConfig, sizes, dtype: str):
    steps = p.ppo_epochs * sizes.mini_batches_per_epoch * 1000
    common = dict(scheduler="constant", betas=p.adam_betas, total_steps=steps, warmup_steps=0,
                  config=distributed.ds_config(micro_batch=p.micro_batch_size,
                                               grad_accum=sizes.grad_accum, max_grad_norm=1.0,
                                               zero_stage=0, offload_optimizer=False,
                                               offload_param=False, precision=dtype))
    return (distributed.init_engine(policy, lr=p.learning_rate, weight_decay=0.0, **common),
            distributed.init_engine(critic, lr=p.critic_learning_rate, weight_decay=0.0, **common))


def ppo_update(policy_engine, critic_engine, traj, old_lp, old_values, adv, ret, p, sizes):
    """train.loop._ppo_epochs as the loop calls it for PPO with one critic (GAE, no cost)."""
    critic = ValueTrack("critic", critic_engine, old_values, ret, "ppo/loss/value",
                        "ppo/val/clipfrac")
    stats = _ppo_epochs(policy_engine, [critic], traj, old_lp, adv, SimpleNamespace(ppo=p), sizes)
    if isinstance(stats, str):
        raise RuntimeError(f"{stats} is not finite")
    return stats


def rest_of_iteration(mode, pipe, traj, policy_engine, critic_engine, reference, p,
                      sizes) -> dict[str, float]:
    times = {}
    device = traj.input_ids.device
    t0 = time.perf_counter()
    old_lp = forwards.logprobs_of(policy_engine.module, traj, p.temperature, p.micro_batch_size)
    ref_lp = forwards.logprobs_of(reference, traj, p.temperature, p.micro_batch_size)
    old_values = forwards.values_of(critic_engine.module, traj, p.micro_batch_size)
    sync(device)
    times["forwards"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    scored = pipe(traj, ScoreShaper("none", None, None), 1)
    credit = mode.apply(scored.signals, mode.knobs())
    shaped = add_kl_to_rewards(credit.rewards, old_lp, ref_lp, traj.response_mask, p.kl_coef, "k1")
    sync(device)
    times["score"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    adv, ret = GAE(p.gamma, p.gae_lambda, whiten=True)(shaped.rewards, old_values,
                                                        traj.response_mask)
    ppo_update(policy_engine, critic_engine, traj, old_lp, old_values, adv, ret, p, sizes)
    sync(device)
    times["update"] = time.perf_counter() - t0
    return times


def bench_model(model: str, rounds: int, seed: int, variants: dict, modes: list[str],
                device: torch.device, dtype: str, overrides: dict, backend: str = "auto") -> dict:
    p = PPOConfig(**{**SIZES[model], **overrides}, learning_rate=3e-5, critic_learning_rate=5e-5)
    sizes = derived_sizes(p, 1)
    tokenizer, policy, reference, rm, critic = build(model, seed, device, dtype)
    policy_engine, critic_engine = engines_for(policy, critic, p, sizes, dtype)
    rm_cfg = RewardModelConfig(name="toy", path="toy:rm", max_length=256)
    pipes = {m: RewardPipeline(RewardStack(rm_cfg, rm, tokenizer), tokenizer, MODES[m].needs)
             for m in modes}
    gen_cfg = OmegaConf.structured(GenerationConfig(backend=backend))
    generator = build_generator(gen_cfg, tokenizer, Sampling(p.max_new_tokens), device, policy)
    print(f"  {model}: generation {describe(generator, device, backend)}", file=sys.stderr, flush=True)
    stream = PromptStream(load_prompts("toy:prompts_train", "train", "prompt"), tokenizer,
                          global_batch=p.rollout_batch_size, rank=0, world_size=1, seed=seed,
                          max_prompt_length=16)
    # The update's speed-up does not depend on the mode: its "before" runs with sparse only.
    runs = [(m, "current") for m in modes] + [("sparse", v) for v in variants if v != "current"]
    results: dict = {r: {ph: [] for ph in (*PHASES, "iteration")} for r in runs}
    tokens = {"generate": [], "read": [], "steps": []}
    for r in range(rounds + 1):  # round 0 warms up (allocator, DeepSpeed's first step)
        batch = stream.next_batch()
        sync(device)
        t0 = time.perf_counter()
        traj = generator.generate(policy_engine.module, batch.texts, batch.input_ids.to(device),
                                  batch.attention_mask.to(device))
        sync(device)
        t_gen = time.perf_counter() - t0
        order = runs[r % len(runs):] + runs[:r % len(runs)]
        for mode, variant in order:
            with variants[variant]():
                times = rest_of_iteration(MODES[mode], pipes[mode], traj, policy_engine, critic_engine,
                                          reference, p, sizes)
            if r == 0:
                continue
            times["generate"] = t_gen
            times["iteration"] = sum(times[ph] for ph in PHASES)
            for ph, v in times.items():
                results[(mode, variant)][ph].append(v)
        if r:
            tokens["generate"].append(int(traj.response_mask.sum()))
            tokens["read"].append(int(traj.attention_mask.sum()))
            tokens["steps"].append(int(traj.response_mask.sum(-1).max()))
        print(f"  {model} round {r}/{rounds} done", file=sys.stderr, flush=True)
    n = lambda m: sum(x.numel() for x in m.parameters())  # noqa: E731
    return dict(results=results, tokens=tokens, p=p, policy_params=n(policy), rm_params=n(rm),
                critic_params=n(critic), device=str(device), dtype=dtype,
                generation=describe(generator, device, backend))


def table(model: str, out: dict, base_variant: str) -> str:
    res, p = out["results"], out["p"]
    med = {k: {ph: statistics.median(v) for ph, v in d.items()} for k, d in res.items()}
    gen_tok = statistics.median(out["tokens"]["generate"])
    read_tok = statistics.median(out["tokens"]["read"])
    base_mode = "sparse" if ("sparse", base_variant) in res else next(iter(res))[0]
    lines = [
        f"### {model}: policy {out['policy_params'] / 1e6:.1f}M, RM {out['rm_params'] / 1e6:.1f}M "
        f"params; rollout {p.rollout_batch_size}, mini {p.mini_batch_size}, micro "
        f"{p.micro_batch_size}, {p.ppo_epochs} PPO epochs, max_new_tokens {p.max_new_tokens}; "
        f"{out['device']}, {out['dtype']}; generation {out['generation']}; "
        f"{len(res[next(iter(res))]['iteration'])} rounds",
        "",
        "| mode | variant | generate s | forwards s | score s | update s | iteration s "
        f"| vs {base_mode} (paired median) | scoring overhead vs {base_mode} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    base = res[(base_mode, base_variant)]
    for (mode, variant), d in res.items():
        ratio = statistics.median(a / b for a, b in zip(d["iteration"], base["iteration"]))
        # The one phase whose work differs between modes: its extra seconds over sparse's
        # whole iteration, paired per round (forwards and update do identical work in every
        # mode, so their differences are the machine's noise, not the mode's cost).
        extra = statistics.median((s - s0) / it for s, s0, it in
                                  zip(d["score"], base["score"], base["iteration"]))
        m = med[(mode, variant)]
        lines.append(f"| {mode} | {variant} | {m['generate']:.3f} | {m['forwards']:.3f} | "
                     f"{m['score']:.3f} | {m['update']:.3f} | {m['iteration']:.3f} | {ratio:.3f} "
                     f"| {extra:+.2%} |")
    m = med[(base_mode, base_variant)]
    lines += ["", f"Tokens per second ({base_mode}, {base_variant}): generate "
              f"{gen_tok / m['generate']:.0f} generated tok/s; forwards "
              f"{3 * read_tok / m['forwards']:.0f} tok/s; update "
              f"{2 * p.ppo_epochs * read_tok / m['update']:.0f} tok/s; score "
              f"{read_tok / m['score']:.0f} tok/s (median {gen_tok:.0f} generated, "
              f"{read_tok:.0f} read tokens per rollout)."]
    for mode, other in res:
        if other != base_variant:
            for ph in ("update", "forwards", "iteration"):
                a, b = res[(mode, other)][ph], res[(mode, base_variant)][ph]
                ratio = statistics.median(x / y for x, y in zip(a, b))
                lines.append(f"{ph} phase, {other} / {base_variant} ({mode}, paired median of "
                             f"{len(a)} rounds): {ratio:.3f}")
    return "\n".join(lines)


def floors(out: dict, hw: dict) -> str:
    """Each phase's median time against the least time the hardware could take for it."""
    res, p, dtype = out["results"], out["p"], out["dtype"]
    peak = hw.get(f"{dtype}_tflops")
    if not (peak and hw.get("hbm_tbps")):
        return (f"(no floors: pass --hbm-tbps and --{dtype}-tflops, the device's memory "
                "bandwidth in TB/s and peak dense TFLOP/s in this dtype)")
    flops, bandwidth = peak * 1e12, hw["hbm_tbps"] * 1e12
    tok = out["tokens"]
    read = statistics.median(tok["read"])
    steps = statistics.median(tok["steps"])
    gen_tok = statistics.median(tok["generate"])
    pol, rm, critic = out["policy_params"], out["rm_params"], out["critic_params"]
    b = p.rollout_batch_size
    floor = {
        "generate": steps * max(pol * BYTES[dtype] / bandwidth, 2 * pol * b / flops),
        "forwards": 2 * (2 * pol + critic) * read / flops,
        "score": 2 * rm * read / flops,
        "update": 6 * (pol + critic) * read * p.ppo_epochs / flops,
    }
    floor["iteration"] = sum(floor.values())
    base_mode = "sparse" if ("sparse", "current") in res else next(iter(res))[0]
    d = res[(base_mode, "current")]
    lines = [
        f"Floors ({base_mode}; {hw['hbm_tbps']:g} TB/s, {peak:g} TFLOP/s {dtype}; "
        f"{read:.0f} tokens read, {gen_tok:.0f} generated in {steps:.0f} decode steps):",
        "",
        "| phase | time s | floor s | time / floor | basis |",
        "|---|---|---|---|---|",
    ]
    basis = {
        "generate": f"{steps:.0f} steps x max(read {pol * BYTES[dtype] / 1e9:.2f} GB of weights, "
                    f"2 x params x {b} rows of FLOPs)",
        "forwards": "2 x params x tokens, policy + reference + critic",
        "score": "2 x RM params x tokens",
        "update": f"6 x params x tokens x {p.ppo_epochs} epochs, policy + critic",
        "iteration": "sum of the above",
    }
    for ph in (*PHASES, "iteration"):
        t = statistics.median(d[ph])
        lines.append(f"| {ph} | {t:.4f} | {floor[ph]:.4f} | {t / floor[ph]:.1f} | {basis[ph]} |")
    lines += ["", f"Generation: {gen_tok / statistics.median(d['generate']):,.0f} new tokens/s "
              f"(floor: {gen_tok / floor['generate']:,.0f})."]
    return "\n".join(lines)


def _response_logits_before(policy, rollout, temperature):
    """forwards.response_logits as it was before the speed-up (git 0629705)."""
    mask = rollout.attention_mask
    logits = policy(input_ids=rollout.input_ids, attention_mask=mask.long(),
                    position_ids=position_ids_from_mask(mask), use_cache=False).logits
    start = rollout.query_ids.shape[1] - 1
    logits = logits[:, start:start + rollout.response_ids.shape[1]].float() / temperature
    # Today's callers take the real response tokens' logits, [n, V].
    return logits[rollout.response_mask]


class Before:
    """The code as it was before the speed-up (git 0629705): every micro batch padded to the
    whole rollout's widest prompt and longest response (no packing), the LM head on every
    position, fresh tensors NaN-filled (torch's default under deterministic algorithms)."""

    def __enter__(self):
        self.patches = [mock.patch.object(forwards, "response_logits", _response_logits_before),
                        mock.patch.object(forwards, "packs_rows", lambda model: False),
                        mock.patch.object(Rollout, "without_padding", lambda self: self)]
        for patch in self.patches:
            patch.start()
        torch.utils.deterministic.fill_uninitialized_memory = True

    def __exit__(self, *exc):
        for patch in self.patches:
            patch.stop()
        torch.utils.deterministic.fill_uninitialized_memory = False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="toy,gpt2-small")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--compare-update", action="store_true",
                    help="also time the update phase as it was before the speed-up")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--dtype", choices=tuple(DTYPES), default="fp32",
                    help="bf16: models in bfloat16, DeepSpeed bf16")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated modes to run")
    ap.add_argument("--batch", type=int, help="rollout batch (default: the model's)")
    ap.add_argument("--mini-batch", type=int, help="default: the model's, capped at --batch")
    ap.add_argument("--micro-batch", type=int, help="default: the model's, capped at the mini batch")
    ap.add_argument("--epochs", type=int, help="PPO epochs (default: the model's)")
    ap.add_argument("--new-tokens", type=int, help="max new tokens (default: the model's)")
    ap.add_argument("--generation", default="auto", choices=("auto", "hf", "static"),
                    help="the generation backend (as `red train generation=...`; auto: static "
                         "on CUDA, hf on CPU)")
    ap.add_argument("--hbm-tbps", type=float, help="memory bandwidth, TB/s (floors)")
    ap.add_argument("--bf16-tflops", type=float, help="peak dense bf16 TFLOP/s (floors)")
    ap.add_argument("--fp32-tflops", type=float, help="peak fp32 TFLOP/s (floors)")
    args = ap.parse_args()
    modes = args.modes.split(",")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        ap.error(f"unknown modes {unknown}; known: {', '.join(MODES)}")
    if args.compare_update and "sparse" not in modes:
        ap.error("--compare-update compares sparse: include it in --modes")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device here")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = distributed.setup(args.device).device
    if device.type == "cpu":
        # As `red train` sets them on CPU.
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.utils.deterministic.fill_uninitialized_memory = False
    variants = {"current": contextlib.nullcontext}
    if args.compare_update:
        variants["before"] = Before
    hw = {"hbm_tbps": args.hbm_tbps, "bf16_tflops": args.bf16_tflops,
          "fp32_tflops": args.fp32_tflops}
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{torch.get_num_threads()} threads, {os.cpu_count()} cores")
    print(f"torch {torch.__version__}, {where}, {args.dtype}", flush=True)
    for model in args.models.split(","):
        overrides = {}
        if args.batch:
            overrides["rollout_batch_size"] = args.batch
        if args.epochs:
            overrides["ppo_epochs"] = args.epochs
        if args.new_tokens:
            overrides["max_new_tokens"] = args.new_tokens
        batch = overrides.get("rollout_batch_size", SIZES[model]["rollout_batch_size"])
        mini = args.mini_batch or min(SIZES[model]["mini_batch_size"], batch)
        overrides["mini_batch_size"] = mini
        overrides["micro_batch_size"] = args.micro_batch or min(SIZES[model]["micro_batch_size"],
                                                                mini)
        out = bench_model(model, args.rounds, args.seed, variants, modes, device, args.dtype,
                          overrides, args.generation)
        print(table(model, out, "current"), "\n", flush=True)
        print(floors(out, hw), "\n", flush=True)


if __name__ == "__main__":
    main()
