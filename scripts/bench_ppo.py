"""Benchmark one PPO iteration, phase by phase, for every redistribution mode side by side.

    python scripts/bench_ppo.py                       # toy + gpt2-small, ~10 min on 2 CPU cores
    python scripts/bench_ppo.py --models toy --rounds 8
    python scripts/bench_ppo.py --compare-update      # also: sparse as the code was before the
                                                      # speed-up of the update (before/after)

What it runs: the same functions `red train` runs (red_cli.generation, red_cli.train.forwards,
red_cli.reward, red_cli.modes, red_cli.rlhf, train.loop._ppo_epochs on DeepSpeed engines
with torch AdamW), on one process.

  toy         the embedded task's SFT policy and causal RM (built on first use, cached)
  gpt2-small  random-init GPT-2 small shapes (768 / 12 layers / 12 heads / vocab 50257) for
              both policy and RM, prompts from the toy task (the toy tokenizer's ids are a
              subset of the vocabulary; a random policy rarely emits EOS, so responses run to
              max_new_tokens: the worst case)

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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DS_ACCELERATOR", "cpu")

from red_cli import models  # noqa: E402
from red_cli.config.schema import PPOConfig, RewardModelConfig  # noqa: E402
from red_cli.data import PromptStream, load_prompts  # noqa: E402
from red_cli.generation import Rollout, Sampling  # noqa: E402
from red_cli.generation.hf import HFGenerator  # noqa: E402
from red_cli.modes import registry  # noqa: E402
from red_cli.reward.pipeline import RewardPipeline  # noqa: E402
from red_cli.reward.shaping import ScoreShaper  # noqa: E402
from red_cli.reward.stack import RewardStack  # noqa: E402
from red_cli.rlhf.kl import add_kl_to_rewards  # noqa: E402
from red_cli.rlhf.masking import position_ids_from_mask  # noqa: E402
from red_cli.toy import resolve_path  # noqa: E402
from red_cli.train import distributed, forwards  # noqa: E402
from red_cli.train.estimators import GAE  # noqa: E402
from red_cli.train.loop import _ppo_epochs  # noqa: E402
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
GPT2_SMALL = dict(n_embd=768, n_layer=12, n_head=12, vocab_size=50257, n_positions=256)


def build(model: str, seed: int):
    """Policy, reference, RM, tokenizer, critic: as train_ppo builds them."""
    torch.manual_seed(seed)
    tokenizer = models.load_tokenizer(resolve_path("toy:policy"))
    if model == "toy":
        policy = models.load_policy(resolve_path("toy:policy"))
        rm = models.load_reward_model(resolve_path("toy:rm"))
    else:
        from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

        common = dict(GPT2_SMALL, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        policy = models.disable_dropout(GPT2LMHeadModel(GPT2Config(**common)))
        rm = models.freeze(models.disable_dropout(
            GPT2ForSequenceClassification(GPT2Config(**common, num_labels=1))))
    reference = models.reference_from(policy)
    critic, _ = models.build_critic("reward_model", rm, policy, True, True)
    return tokenizer, policy, reference, rm, critic


def engines_for(policy, critic, p: PPOConfig, sizes):
    steps = p.ppo_epochs * sizes.mini_batches_per_epoch * 1000
    common = dict(scheduler="constant", betas=p.adam_betas, total_steps=steps, warmup_steps=0,
                  config=distributed.ds_config(micro_batch=p.micro_batch_size,
                                               grad_accum=sizes.grad_accum, max_grad_norm=1.0,
                                               zero_stage=0, offload_optimizer=False,
                                               offload_param=False, precision="fp32"))
    return (distributed.init_engine(policy, lr=p.learning_rate, weight_decay=0.0, **common),
            distributed.init_engine(critic, lr=p.critic_learning_rate, weight_decay=0.0, **common))


def rest_of_iteration(mode, pipe, traj, policy_engine, critic_engine, reference, p,
                      sizes) -> dict[str, float]:
    times = {}
    t0 = time.perf_counter()
    old_lp = forwards.logprobs_of(policy_engine.module, traj, p.temperature, p.micro_batch_size)
    ref_lp = forwards.logprobs_of(reference, traj, p.temperature, p.micro_batch_size)
    old_values = forwards.values_of(critic_engine.module, traj, p.micro_batch_size)
    times["forwards"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    scored = pipe(traj, ScoreShaper("none", None, None), 1)
    credit = mode.apply(scored.signals, mode.knobs())
    shaped = add_kl_to_rewards(credit.rewards, old_lp, ref_lp, traj.response_mask, p.kl_coef, "k1")
    times["score"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    adv, ret = GAE(p.gamma, p.gae_lambda, whiten=True)(shaped.rewards, old_values,
                                                        traj.response_mask)
    _ppo_epochs(policy_engine, critic_engine, traj, old_lp, old_values, adv, ret,
                SimpleNamespace(ppo=p), sizes)
    times["update"] = time.perf_counter() - t0
    return times


def bench_model(model: str, rounds: int, seed: int, variants: dict) -> dict:
    p = PPOConfig(**SIZES[model], learning_rate=3e-5, critic_learning_rate=5e-5)
    sizes = derived_sizes(p, 1)
    tokenizer, policy, reference, rm, critic = build(model, seed)
    policy_engine, critic_engine = engines_for(policy, critic, p, sizes)
    rm_cfg = RewardModelConfig(name="toy", path="toy:rm", max_length=256)
    pipes = {m: RewardPipeline(RewardStack(rm_cfg, rm, tokenizer), tokenizer, mode.needs)
             for m, mode in MODES.items()}
    generator = HFGenerator(tokenizer, Sampling(p.max_new_tokens))
    stream = PromptStream(load_prompts("toy:prompts_train", "train", "prompt"), tokenizer,
                          global_batch=p.rollout_batch_size, rank=0, world_size=1, seed=seed,
                          max_prompt_length=16)
    # The update's speed-up does not depend on the mode: its "before" runs with sparse only.
    runs = [(m, "current") for m in MODES] + [("sparse", v) for v in variants if v != "current"]
    results: dict = {r: {ph: [] for ph in (*PHASES, "iteration")} for r in runs}
    tokens = {"generate": [], "read": []}
    for r in range(rounds + 1):  # round 0 warms up (allocator, DeepSpeed's first step)
        batch = stream.next_batch()
        t0 = time.perf_counter()
        traj = generator.generate(policy_engine.module, batch.texts, batch.input_ids,
                                  batch.attention_mask)
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
        print(f"  {model} round {r}/{rounds} done", file=sys.stderr, flush=True)
    return dict(results=results, tokens=tokens, p=p, policy_params=sum(
        x.numel() for x in policy.parameters()), rm_params=sum(x.numel() for x in rm.parameters()))


def table(model: str, out: dict, base_variant: str) -> str:
    res, p = out["results"], out["p"]
    med = {k: {ph: statistics.median(v) for ph, v in d.items()} for k, d in res.items()}
    gen_tok = statistics.median(out["tokens"]["generate"])
    read_tok = statistics.median(out["tokens"]["read"])
    lines = [
        f"### {model}: policy {out['policy_params'] / 1e6:.1f}M, RM {out['rm_params'] / 1e6:.1f}M "
        f"params; rollout {p.rollout_batch_size}, mini {p.mini_batch_size}, micro "
        f"{p.micro_batch_size}, {p.ppo_epochs} PPO epochs, max_new_tokens {p.max_new_tokens}; "
        f"{len(res[next(iter(res))]['iteration'])} rounds",
        "",
        "| mode | variant | generate s | forwards s | score s | update s | iteration s "
        "| vs sparse (paired median) | scoring overhead vs sparse |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    base = res[("sparse", base_variant)]
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
    m = med[("sparse", base_variant)]
    lines += ["", f"Tokens per second (sparse, {base_variant}): generate "
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


def _response_logits_before(policy, rollout, temperature):
    """forwards.response_logits as it was before the speed-up (git 0629705)."""
    mask = rollout.attention_mask
    logits = policy(input_ids=rollout.input_ids, attention_mask=mask.long(),
                    position_ids=position_ids_from_mask(mask), use_cache=False).logits
    start = rollout.query_ids.shape[1] - 1
    return logits[:, start:start + rollout.response_ids.shape[1]].float() / temperature


class Before:
    """The code as it was before the speed-up (git 0629705): every micro batch padded to the
    whole rollout's widest prompt and longest response, the LM head on every position,
    fresh tensors NaN-filled (torch's default under deterministic algorithms)."""

    def __enter__(self):
        self.patches = [mock.patch.object(forwards, "response_logits", _response_logits_before),
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
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    distributed.setup("cpu")
    # As `red train` sets them on CPU.
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    variants = {"current": contextlib.nullcontext}
    if args.compare_update:
        variants["before"] = Before
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} cores", flush=True)
    for model in args.models.split(","):
        out = bench_model(model, args.rounds, args.seed, variants)
        print(table(model, out, "current"), "\n", flush=True)


if __name__ == "__main__":
    main()
