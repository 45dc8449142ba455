"""Benchmark reward-model scoring: sparse vs td vs abc, against the naive baselines.

    python scripts/bench_scoring.py            # full run (< 5 min on 2 CPU cores)
    python scripts/bench_scoring.py --quick    # sanity mode (small model, short lengths)

Two random-init GPT-2 reward models on CPU: "toy" (n_embd 128, 4 layers, 4 heads: the toy
RM's size class) and "gpt2-small" (768 / 12 layers / 12 heads). Batch 16, left-padded
prompts of 12-16 tokens, responses of T = 16 / 64 / 256 tokens.

Methods (all under torch.no_grad, same weights):
  sparse     score_batch(positions=False, attention=False)     one SDPA forward
  td         score_batch(positions=True)                       same forward, head at every position
  abc        score_batch(attention=True)                       same forward, last layer's pooled row recomputed
  naive-td   one score_batch(positions=False) forward per response prefix (T forwards)
  eager-abc  eager attention, output_attentions=True (every layer's [b, h, L, L] maps), row read

Timing: CPU time of this process (time.process_time; torch runs 1 intra-op thread by
default), because the machine is shared: wall time measures the neighbours, CPU time mostly
measures us (cache and memory-bandwidth contention still leak in). Wall medians of sparse are
printed beside it. Rounds interleave the methods (rotated order) and the configurations; each
round's ratios are paired with that round's sparse time and the table reports medians. Phase 1 runs
one round everywhere, phase 2 adds rounds (cheapest configuration first) while the time
budget lasts, so a loaded machine gets fewer repeats, not a longer run; the table says how
many. naive-td runs once per configuration: every prefix for the toy model up to T=64, else
only k of the T prefixes (toy: 16, gpt2-small: 3; evenly spaced, always the shortest and the
longest) and the total is the linear interpolation of the per-prefix times over all T prefix
lengths (marked "est k/T" in the table).

FLOPs: torch.utils.flop_counter at the memory batch, scaled (SDPA's fused kernel is invisible
to the counter; its FLOPs, equal to the eager path's attention bmm FLOPs, are added). They
are load-independent, so they say what the noisy timings cannot: the exact extra work.

Memory: peak bytes of tensor storages created inside the call and alive at the same time,
tracked with a TorchDispatchMode and storage weak references (weights and inputs excluded;
kernel-internal scratch, e.g. inside SDPA's fused CPU kernel, is invisible to it). CPU torch
has no allocator statistics and RSS only grows, so this is the honest per-call number we
can get. It is measured at a small batch (--mem-batch, default 2) and scaled to the timing
batch: every term is linear in the batch size.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode
from transformers import GPT2Config, GPT2ForSequenceClassification
from transformers.utils import logging as hf_logging

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from red_cli.reward.scoring import score_batch  # noqa: E402
from red_cli.rlhf.masking import last_true_index, position_ids_from_mask  # noqa: E402

MODELS = {
    "toy": dict(n_embd=128, n_layer=4, n_head=4),
    "gpt2-small": dict(n_embd=768, n_layer=12, n_head=12),
}
FAST = ("sparse", "td", "abc", "eager-abc")


# --------------------------------------------------------------------------- memory


class PeakTensorMemory(TorchDispatchMode):
    """Peak bytes of CPU tensor storages created inside the block and simultaneously alive."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            self.current -= self.live.pop(key)[1]
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                storage = t.untyped_storage()
                ref = StorageWeakRef(storage)
                if ref.cdata not in self.live:
                    self.live[ref.cdata] = (ref, storage.nbytes())
                    self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        return out


def peak_bytes(fn: Callable[[], object]) -> int:
    with PeakTensorMemory() as tracker:
        result = fn()
        tracker.peak = max(tracker.peak, tracker.current)
    del result
    return tracker.peak


# --------------------------------------------------------------------------- setup


def build_models(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    config = GPT2Config(**MODELS[name], n_positions=512, num_labels=1, pad_token_id=0)
    model = GPT2ForSequenceClassification(config).eval()
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    assert model.config._attn_implementation == "sdpa"
    return model, eager


def make_batch(b: int, t: int, prompt_max: int, gen: torch.Generator):
    """Left-padded prompts of prompt_max-4..prompt_max tokens followed by T response tokens."""
    length = prompt_max + t
    ids = torch.zeros((b, length), dtype=torch.long)
    mask = torch.zeros((b, length), dtype=torch.long)
    for i in range(b):
        p = int(torch.randint(prompt_max - 4, prompt_max + 1, (1,), generator=gen))
        ids[i, length - t - p :] = torch.randint(1, 50257, (p + t,), generator=gen)
        mask[i, length - t - p :] = 1
    return ids, mask


def eager_abc(eager, ids, mask):
    out = eager.transformer(
        input_ids=ids,
        attention_mask=mask,
        position_ids=position_ids_from_mask(mask),
        output_attentions=True,
        use_cache=False,
    )
    pooled = last_true_index(mask.bool())
    ar = torch.arange(ids.shape[0])
    scores = eager.score(out.last_hidden_state[ar, pooled])[:, 0]
    return scores, out.attentions[-1].mean(1)[ar, pooled]


@dataclass
class Config:
    model: str
    t: int
    ids: torch.Tensor
    mask: torch.Tensor
    net: torch.nn.Module
    eager: torch.nn.Module
    times: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in FAST})  # CPU s
    wall: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in FAST})
    naive_td_s: float = float("nan")
    naive_k: int = 0
    mem: dict[str, float] = field(default_factory=dict)
    flops: dict[str, float] = field(default_factory=dict)
    check: dict[str, float] = field(default_factory=dict)

    def methods(self) -> dict[str, Callable[[], object]]:
        ids, mask, net = self.ids, self.mask, self.net
        return {
            "sparse": lambda: score_batch(net, ids, mask, positions=False, attention=False),
            "td": lambda: score_batch(net, ids, mask, positions=True, attention=False),
            "abc": lambda: score_batch(net, ids, mask, positions=False, attention=True),
            "eager-abc": lambda: eager_abc(self.eager, ids, mask),
        }

    def round_estimate(self) -> float:
        return sum(statistics.median(v) for v in self.wall.values() if v)


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    with torch.no_grad():
        fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def run_round(cfg: Config, rotation: int) -> None:
    methods = list(cfg.methods().items())
    shift = rotation % len(methods)
    for name, fn in methods[shift:] + methods[:shift]:
        cpu, wall = timed(fn)
        cfg.times[name].append(cpu)
        cfg.wall[name].append(wall)


def run_naive_td(cfg: Config, k: int) -> None:
    """One forward per prefix; time k of the T prefix lengths and interpolate the rest."""
    t = cfg.t
    start_col = cfg.ids.shape[1] - t  # response starts here in every row (left-padded prompts)
    lengths = sorted({round(1 + i * (t - 1) / max(k - 1, 1)) for i in range(k)} | {t})
    td = score_batch(cfg.net, cfg.ids, cfg.mask, positions=True, attention=False).position_scores
    per_prefix, worst = [], 0.0
    for n in lengths:
        cut = start_col + n
        ids, mask = cfg.ids[:, :cut], cfg.mask[:, :cut]
        begin = time.process_time()
        out = score_batch(cfg.net, ids, mask, positions=False, attention=False)
        per_prefix.append(time.process_time() - begin)
        worst = max(worst, (out.scores - td[:, cut - 1]).abs().max().item())
    # Linear interpolation of time(prefix length) over 1..T.
    total = 0.0
    for n in range(1, t + 1):
        j = next(i for i, m in enumerate(lengths) if m >= n)
        if lengths[j] == n or j == 0:
            total += per_prefix[j]
        else:
            a, b = lengths[j - 1], lengths[j]
            w = (n - a) / (b - a)
            total += (1 - w) * per_prefix[j - 1] + w * per_prefix[j]
    cfg.naive_td_s, cfg.naive_k = total, len(lengths)
    cfg.check["td vs per-prefix"] = worst


def measure_static(cfg: Config, mem_batch: int) -> None:
    """Peak tensor memory and FLOPs of each method at a small batch, scaled to cfg's batch."""
    ids, mask = cfg.ids[:mem_batch], cfg.mask[:mem_batch]
    small = Config(cfg.model, cfg.t, ids, mask, cfg.net, cfg.eager)
    scale = cfg.ids.shape[0] / mem_batch
    counts = {}
    with torch.no_grad():
        for name, fn in small.methods().items():
            with FlopCounterMode(display=False) as counter:
                cfg.mem[name] = peak_bytes(fn) * scale
            counts[name] = counter.get_flop_counts()["Global"]
        ours = score_batch(cfg.net, ids, mask, positions=False, attention=True)
        ref_scores, ref_row = eager_abc(cfg.eager, ids, mask)
    # FlopCounterMode does not see SDPA's fused CPU kernel; its FLOPs are the eager path's
    # attention bmm FLOPs (the same QK^T and AV products), added to the SDPA methods.
    attention = sum(v for op, v in counts["eager-abc"].items() if "bmm" in str(op))
    for name, per_op in counts.items():
        cfg.flops[name] = (sum(per_op.values()) + (attention if name != "eager-abc" else 0)) * scale
    cfg.check["abc row vs eager"] = (ours.attention_row - ref_row).abs().max().item()
    cfg.check["score vs eager"] = (ours.scores - ref_scores).abs().max().item()


# --------------------------------------------------------------------------- report


def med(v: list[float]) -> float:
    return statistics.median(v) if v else float("nan")


def paired_ratio(cfg: Config, name: str) -> float:
    pairs = zip(cfg.times[name], cfg.times["sparse"])
    return med([a / b for a, b in pairs])


def table(configs: list[Config], b: int) -> str:
    mb = 1 / 2**20
    lines = [
        "| model | T | L | rounds | sparse ms (wall) | td ms (x sparse) | abc ms (x sparse) "
        "| naive-td ms (x sparse) | eager-abc ms (x sparse) | peak MB sparse | abc extra MB "
        "| eager-abc extra MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in configs:
        sp = med(c.times["sparse"])
        est = "" if c.naive_k >= c.t else f" est {c.naive_k}/{c.t}"
        lines.append(
            f"| {c.model} | {c.t} | {c.ids.shape[1]} | {len(c.times['sparse'])} "
            f"| {sp * 1e3:.1f} ({med(c.wall['sparse']) * 1e3:.0f}) "
            f"| {med(c.times['td']) * 1e3:.1f} ({paired_ratio(c, 'td'):.3f}) "
            f"| {med(c.times['abc']) * 1e3:.1f} ({paired_ratio(c, 'abc'):.3f}) "
            f"| {c.naive_td_s * 1e3:.0f} ({c.naive_td_s / sp:.1f}){est} "
            f"| {med(c.times['eager-abc']) * 1e3:.1f} ({paired_ratio(c, 'eager-abc'):.3f}) "
            f"| {c.mem['sparse'] * mb:.1f} | {(c.mem['abc'] - c.mem['sparse']) * mb:+.2f} "
            f"| {(c.mem['eager-abc'] - c.mem['sparse']) * mb:+.1f} |"
        )
    lines.append("")
    lines.append(
        f"batch {b}; times are CPU time of this process (wall in brackets for sparse); "
        "ratios are medians of per-round (method / sparse) pairs."
    )
    for c in configs:
        analytic = 4 * b * MODELS[c.model]["n_head"] * c.ids.shape[1]
        maps = analytic * MODELS[c.model]["n_layer"] * c.ids.shape[1]
        checks = ", ".join(f"{k} {v:.1e}" for k, v in c.check.items())
        extra = {m: c.flops[m] / c.flops["sparse"] - 1 for m in ("td", "abc")}
        lines.append(
            f"{c.model} T={c.t}: FLOPs {c.flops['sparse'] / 1e9:.2f} G; extra over sparse: "
            + ", ".join(f"{m} {v:+.4%}" for m, v in extra.items())
            + f"; analytic abc row logits {analytic / 2**20:.2f} MB, eager maps kept "
            f"{maps / 2**20:.1f} MB; max|diff| {checks}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="toy model, T=16/64, 40 s budget")
    parser.add_argument("--models", type=str, default=",".join(MODELS), help="subset of MODELS")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lengths", type=str, default="16,64,256")
    parser.add_argument("--prompt", type=int, default=16, help="longest prompt (tokens)")
    parser.add_argument(
        "--budget-s", type=float, default=250.0, help="stop adding rounds after this"
    )
    parser.add_argument("--max-rounds", type=int, default=15)
    parser.add_argument("--mem-batch", type=int, default=2)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (1: on a shared 2-core box a second thread mostly waits)",
    )
    args = parser.parse_args(argv)
    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    models = ["toy"] if args.quick else args.models.split(",")
    lengths = [16, 64] if args.quick else [int(x) for x in args.lengths.split(",")]
    budget = 40.0 if args.quick else args.budget_s
    wall0 = time.perf_counter()
    load0 = os.getloadavg()
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)

    configs: list[Config] = []
    for name in models:
        net, eager = build_models(name)
        for t in lengths:
            ids, mask = make_batch(args.batch, t, args.prompt, gen)
            configs.append(Config(name, t, ids, mask, net, eager))

    # Per model: phase 1 (one round, naive td, memory and FLOPs for every length), then
    # phase 2 (more interleaved rounds, cheapest first) until that model's share of the budget
    # is spent: the toy model may use the first 20%, gpt2-small the rest.
    rotation = 0
    for name in models:
        mine = [c for c in configs if c.model == name]
        timed(mine[0].methods()["sparse"])  # warm-up: the first call pays lazy initialisation
        timed(mine[0].methods()["eager-abc"])
        for c in mine:
            run_round(c, rotation)
            rotation += 1
            k = c.t if (c.model == "toy" and c.t <= 64) else (16 if c.model == "toy" else 3)
            with torch.no_grad():
                run_naive_td(c, min(k, c.t))
            measure_static(c, min(args.mem_batch, args.batch))
            print(f"[{time.perf_counter() - wall0:6.1f}s] {name} T={c.t}: phase 1", flush=True)
        deadline = budget * (0.2 if name == "toy" and name != models[-1] else 1.0)
        progress = True
        while progress:
            progress = False
            for c in sorted(mine, key=Config.round_estimate):
                left = deadline - (time.perf_counter() - wall0)
                if len(c.times["sparse"]) < args.max_rounds and c.round_estimate() < left:
                    run_round(c, rotation)
                    rotation += 1
                    progress = True
        print(f"[{time.perf_counter() - wall0:6.1f}s] {name}: phase 2", flush=True)

    elapsed = time.perf_counter() - wall0
    print()
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
        f"load avg {load0[0]:.1f} -> {os.getloadavg()[0]:.1f}, wall {elapsed:.0f} s"
    )
    print(table(configs, args.batch))


if __name__ == "__main__":
    main()
