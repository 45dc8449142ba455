"""Generation backends side by side: new tokens per second, hf against static (eager, compiled).

    python scripts/bench_generation.py                         # toy policy, 64 x 24, CPU (~1 min)
    python scripts/bench_generation.py --variants hf,static-eager,static-compiled   # + compile
    # the GPU shapes of issue #17 (355M GPT-2 medium, bf16, 64 prompts x 64 new tokens):
    python scripts/bench_generation.py --model gpt2-medium --device cuda --dtype bf16 \
        --batch 64 --new-tokens 64 --rounds 10 --hbm-tbps 4.8
    python scripts/bench_generation.py --model gpt2-tiny --batch 4 --new-tokens 8 --rounds 2

Variants (what `red train generation=...` runs; red_cli/generation):
  hf               transformers' `generate`, dynamic KV cache (`generation=hf`)
  static-eager     `generation=static generation.static.compile=off`: StaticCache, red's loop
  static-compiled  `generation=static generation.static.compile=on`: the decode step compiled
                   (mode reduce-overhead: a CUDA graph on CUDA; inductor's C++ on CPU)
Default: hf and static-eager on CPU, all three on CUDA (`generation=auto` runs
static-compiled there).

Models (as scripts/bench_ppo.py builds them; random init except toy): toy (the embedded task's
SFT policy), gpt2-tiny, gpt2-small, gpt2-medium. Prompts: the toy task's training prompts (at
most 16 tokens, left-padded), a new batch each round, the same batch and the same seed for
every variant within a round; sampling at temperature 1, no top-k / top-p. A random-init
policy rarely samples EOS, so its responses run to --new-tokens (the worst case).

Each variant's first call is timed on its own (it allocates the cache and, compiled, traces
and compiles; later shapes of the same bucket reuse it), then --rounds rounds run every variant
in a rotated order. Reported: median seconds per rollout, new tokens per second, the paired
median ratio to hf, the first call, and in how many rounds the variant drew exactly hf's
tokens (on CPU the eager step draws the same tokens from the same seed; compiled or on a GPU
the logits differ in the last bits, so rounds may differ while the distribution is the same:
tests/unit/test_generation_static.py). With --hbm-tbps, the floor: every weight read once per
decode step at that bandwidth.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_ppo  # noqa: E402  (sets DS_ACCELERATOR from --device before DeepSpeed loads)
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from red_cli import models  # noqa: E402
from red_cli.config.schema import GenerationConfig  # noqa: E402
from red_cli.data import PromptStream, load_prompts  # noqa: E402
from red_cli.generation import Sampling, build_generator  # noqa: E402
from red_cli.toy import resolve_path  # noqa: E402

VARIANTS = {"hf": ("hf", {}), "static-eager": ("static", {"compile": "off"}),
            "static-compiled": ("static", {"compile": "on"})}


def policy_for(model: str, device: torch.device, dtype: str):
    tokenizer = models.load_tokenizer(resolve_path("toy:policy"))
    if model == "toy":
        policy = models.load_policy(resolve_path("toy:policy"))
    else:
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(**bench_ppo.GPT2_SHAPES[model], bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)
        policy = models.fuse_gelu(models.disable_dropout(GPT2LMHeadModel(config)))
    return tokenizer, policy.to(device=device, dtype=bench_ppo.DTYPES[dtype]).eval()


def generator_for(variant: str, tokenizer, sampling: Sampling, device, policy):
    backend, knobs = VARIANTS[variant]
    cfg = OmegaConf.structured(GenerationConfig(backend=backend))
    for key, value in knobs.items():
        cfg[backend][key] = value
    return build_generator(cfg, tokenizer, sampling, device, policy)


def timed(generator, policy, batch, device, seed):
    torch.manual_seed(seed)
    bench_ppo.sync(device)
    t0 = time.perf_counter()
    out = generator.generate(policy, batch.texts, batch.input_ids.to(device),
                             batch.attention_mask.to(device))
    bench_ppo.sync(device)
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="toy", choices=("toy", *bench_ppo.GPT2_SHAPES))
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--dtype", choices=tuple(bench_ppo.DTYPES), default="fp32")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--variants", help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (CPU)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hbm-tbps", type=float, help="memory bandwidth in TB/s: the floor")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device here")
    default = "hf,static-eager" + (",static-compiled" if args.device == "cuda" else "")
    variants = (args.variants or default).split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or "hf" not in variants:
        ap.error(f"--variants: hf and any of {', '.join(VARIANTS)} (got {args.variants})")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    tokenizer, policy = policy_for(args.model, device, args.dtype)
    n_params = sum(p.numel() for p in policy.parameters())
    sampling = Sampling(args.new_tokens)
    gens = {v: generator_for(v, tokenizer, sampling, device, policy) for v in variants}
    stream = PromptStream(load_prompts("toy:prompts_train", "train", "prompt"), tokenizer,
                          global_batch=args.batch, rank=0, world_size=1, seed=args.seed,
                          max_prompt_length=16)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{torch.get_num_threads()} threads, {os.cpu_count()} cores")
    print(f"torch {torch.__version__}, {where}; {args.model} ({n_params / 1e6:.1f}M params, "
          f"{args.dtype}), {args.batch} prompts x {args.new_tokens} new tokens, "
          f"{args.rounds} rounds", flush=True)

    first = {}
    batch = stream.next_batch()
    for v in variants:
        first[v] = timed(gens[v], policy, batch, device, args.seed)[0]
    times = {v: [] for v in variants}
    new_tokens, same = [], {v: 0 for v in variants}
    for r in range(args.rounds):
        batch = stream.next_batch()
        seed = args.seed * 1000 + r + 1
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        outs = {}
        for v in order:
            t, outs[v] = timed(gens[v], policy, batch, device, seed)
            times[v].append(t)
        new_tokens.append(int(outs["hf"].response_mask.sum()))
        for v in variants:
            same[v] += torch.equal(outs[v].response_ids, outs["hf"].response_ids)
        print(f"  round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)

    tok = statistics.median(new_tokens)
    lines = ["", "| variant | s / rollout | new tokens / s | vs hf (paired median) | first call s "
             "| rounds with hf's tokens |", "|---|---|---|---|---|---|"]
    for v in variants:
        med = statistics.median(times[v])
        ratio = statistics.median(a / b for a, b in zip(times[v], times["hf"]))
        lines.append(f"| {v} | {med:.4f} | {tok / med:,.0f} | {ratio:.3f} | {first[v]:.2f} | "
                     f"{same[v]}/{args.rounds} |")
    lines.append(f"\n(median {tok:.0f} new tokens per rollout)")
    if args.hbm_tbps:
        step = n_params * bench_ppo.BYTES[args.dtype] / (args.hbm_tbps * 1e12)
        floor = args.new_tokens * step
        lines.append(f"Floor: {args.new_tokens} decode steps x {step * 1e3:.3f} ms (every weight "
                     f"read once at {args.hbm_tbps:g} TB/s) = {floor * 1e3:.1f} ms per rollout, "
                     f"{args.batch * args.new_tokens / floor:,.0f} new tokens/s.")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
