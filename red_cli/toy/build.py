"""Build (once) and cache the embedded toy task: corpus, tokenizers, SFT policy, three RMs
and, when `cost_model_steps` > 0, a cost model.

`ensure_toy(cfg)` returns the cached build for these settings, building it on first use.

Cache: `$RED_CACHE` (default ~/.cache/red) / toy / v{FORMAT_VERSION}-{hash of the
settings}. A build runs under a file lock (concurrent callers wait for it), writes into a
temporary sibling folder, writes the `COMPLETE` marker last and then renames the folder
into place, so a folder that has the marker is always whole.

Layout of a build:
    COMPLETE, summary.json
    reviews.jsonl            every generated review: {"text", "gold", "split"}
    prompts_train.jsonl      {"prompt": ...} per line (disjoint from prompts_eval)
    prompts_eval.jsonl
    samples_eval.jsonl       SFT samples on the eval prompts with their gold scores
    tokenizer/               policy tokenizer (byte-level BPE, left padding)
    tokenizer_rm/            the same BPE with right padding (RMs)
    tokenizer_xtok/          WordPiece tokenizer of toy_xtok
    policy/                  GPT2LMHeadModel + tokenizer
    rm_toy/                  GPT2ForSequenceClassification, policy's BPE, init from SFT
    rm_toy_xtok/             GPT2ForSequenceClassification, its own WordPiece tokenizer
    rm_toy_bidir/            BertForSequenceClassification (CLS pooling at <bos>), BPE
    cm_toy/                  cost model (cost_model_steps > 0 only): like rm_toy, regressed
                             onto the gold cost (hype words, see `cost.py`)

With num_processes=2 a second process (see `parallel.py`) trains `toy_xtok` and
`toy_bidir` while this one trains the policy, samples it, trains `toy` and then the cost
model.

Reward models score `prompt + response` exactly as `tokenizer(text)` encodes it (the
tokenizers prepend <bos> and add no <eos>, RM tokenizers pad on the right): the causal
ones read their scalar head at the last real token, the bidirectional one at position 0.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import random
import shutil
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from red_cli.toy.settings import ToyConfig

FORMAT_VERSION = 2  # bump whenever the build recipe changes what a key produces
MARKER = "COMPLETE"
RM_DIRS = {"toy": "rm_toy", "toy_xtok": "rm_toy_xtok", "toy_bidir": "rm_toy_bidir"}
COST_MODEL_DIR = "cm_toy"
MAGIC_NAMES = {
    "toy:policy": "policy",
    "toy:tokenizer": "tokenizer",
    "toy:rm": RM_DIRS["toy"],
    "toy:rm_xtok": RM_DIRS["toy_xtok"],
    "toy:rm_bidir": RM_DIRS["toy_bidir"],
    "toy:cost_model": COST_MODEL_DIR,
    "toy:prompts_train": "prompts_train.jsonl",
    "toy:prompts_eval": "prompts_eval.jsonl",
}
POSITIVE, NEGATIVE = 0.05, -0.05  # VADER's own thresholds for "positive" / "negative"
# No dropout (PPO's logprobs must not be noisy); fused gelu is cheaper than gelu_new.
GPT2_NO_DROPOUT = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
                   "activation_function": "gelu"}


@dataclass
class ToyArtifacts:
    root: Path
    tokenizer: Path
    policy: Path
    reward_models: dict[str, Path]
    cost_model: Path | None  # None: this world has no cost model
    prompts_train: Path
    prompts_eval: Path
    summary: dict[str, Any]


def default_cache_root() -> Path:
    return Path(os.environ.get("RED_CACHE") or Path.home() / ".cache" / "red")


def as_toy_config(cfg: Any) -> ToyConfig:
    """A ToyConfig from a ToyConfig, an OmegaConf node or a mapping of its fields."""
    if isinstance(cfg, ToyConfig):
        return cfg
    if not isinstance(cfg, Mapping):
        from omegaconf import DictConfig, OmegaConf

        if not isinstance(cfg, DictConfig):
            raise TypeError(f"expected a ToyConfig, got {type(cfg).__name__}")
        cfg = OmegaConf.to_container(cfg, resolve=True)
    fields = {f.name for f in dataclasses.fields(ToyConfig)}
    unknown = sorted(set(cfg) - fields)
    if unknown:
        raise ValueError(f"unknown toy setting(s) {unknown}; valid: {sorted(fields)}")
    return ToyConfig(**cfg)


# Settings added after the first worlds were cached: left out of the key at their defaults,
# so those worlds keep their folders.
_LATER_SETTINGS = {"min_units": 1, "max_units": 3, "max_review_words": 20,
                   "cost_model_steps": 0, "cost_model_lr": 1e-3, "cost_model_batch_size": 64}


def config_key(cfg: ToyConfig) -> str:
    """Folder name of a build: format version + hash of every setting."""
    settings = {k: v for k, v in dataclasses.asdict(cfg).items()
                if not (k in _LATER_SETTINGS and v == _LATER_SETTINGS[k])}
    payload = json.dumps({"format": FORMAT_VERSION, "config": settings}, sort_keys=True)
    return f"v{FORMAT_VERSION}-{hashlib.sha256(payload.encode()).hexdigest()[:16]}"


def _artifacts(root: Path) -> ToyArtifacts:
    summary = json.loads((root / "summary.json").read_text())
    has_cost_model = "cost_model" in summary
    summary["paths"] = {name: str(root / rel) for name, rel in MAGIC_NAMES.items()
                        if has_cost_model or rel != COST_MODEL_DIR}
    summary["paths"]["root"] = str(root)
    return ToyArtifacts(
        root=root,
        tokenizer=root / "tokenizer",
        policy=root / "policy",
        reward_models={name: root / rel for name, rel in RM_DIRS.items()},
        cost_model=root / COST_MODEL_DIR if has_cost_model else None,
        prompts_train=root / "prompts_train.jsonl",
        prompts_eval=root / "prompts_eval.jsonl",
        summary=summary,
    )


def _is_complete(root: Path) -> bool:
    return (root / MARKER).is_file() and (root / "summary.json").is_file()


def ensure_toy(cfg: ToyConfig, cache_root: str | Path | None = None,
               progress: bool = True) -> ToyArtifacts:
    """The toy build for `cfg`: from the cache, or built now (a few minutes on 2 cores).

    Safe to call from several processes at once: one builds, the others wait on the lock
    and then read its result.
    """
    from filelock import FileLock

    cfg = as_toy_config(cfg)
    problems = check_settings(cfg)
    if problems:
        raise ValueError("invalid toy settings:\n  " + "\n  ".join(problems))
    base = Path(cache_root) if cache_root is not None else default_cache_root()
    base = base.expanduser().resolve() / "toy"
    key = config_key(cfg)
    root = base / key
    if _is_complete(root):
        return _artifacts(root)
    base.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(base / f"{key}.lock"))
    try:
        lock.acquire(timeout=0)
    except TimeoutError:
        if progress:
            print(f"toy: waiting for another process building {root}", file=sys.stderr)
        lock.acquire()
    try:
        if _is_complete(root):
            return _artifacts(root)
        # Nobody else builds this key while we hold the lock: leftovers are dead builds.
        for stale in base.glob(f".{key}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if root.exists():
            shutil.rmtree(root)
        tmp = base / f".{key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            summary = _build(cfg, tmp, progress)
            summary["config_key"] = key
            (tmp / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
            (tmp / MARKER).write_text(f"{FORMAT_VERSION}\n")
            os.rename(tmp, root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if progress:
            print(f"toy: built {root} in {summary['build_seconds']:.0f}s", file=sys.stderr)
        return _artifacts(root)
    finally:
        lock.release()


def resolve_toy_path(name: str, cfg: ToyConfig, cache_root: str | Path | None = None) -> Path:
    """Real path of a magic name such as "toy:policy" (building the toy task if needed)."""
    if name not in MAGIC_NAMES:
        raise ValueError(f"unknown toy path {name!r}; valid names: {', '.join(MAGIC_NAMES)}")
    cfg = as_toy_config(cfg)
    if MAGIC_NAMES[name] == COST_MODEL_DIR and cfg.cost_model_steps <= 0:
        raise ValueError(f"{name}: this toy world has no cost model (toy.cost_model_steps="
                         f"{cfg.cost_model_steps}); use toy=safe, or set toy.cost_model_steps > 0")
    return ensure_toy(cfg, cache_root=cache_root).root / MAGIC_NAMES[name]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True) + "\n")


def _gold_stats(golds: list[float]) -> dict[str, float]:
    n = len(golds)
    mean = sum(golds) / n
    std = (sum((g - mean) ** 2 for g in golds) / n) ** 0.5
    return {
        "n": n,
        "gold_mean": mean,
        "gold_std": std,
        "frac_positive": sum(g > POSITIVE for g in golds) / n,
        "frac_negative": sum(g < NEGATIVE for g in golds) / n,
    }


# Settings that must be at least this (counts, sizes, steps) or above 0 (rates).
_AT_LEAST = {
    "n_val_reviews": 1, "n_prompt_reviews": 2, "n_eval_prompts": 1, "max_new_tokens": 1,
    # Byte-level BPE starts from 256 bytes and 3 specials; WordPiece from the corpus's
    # characters (about 60) and 4 specials.
    "vocab_size": 300, "xtok_vocab_size": 100,
    "policy_n_embd": 1, "policy_n_layer": 1, "policy_n_head": 1, "policy_n_positions": 16,
    "sft_steps": 1, "sft_batch_size": 1, "sft_warmup_steps": 0,
    "rm_group_size": 2, "rm_corpus_groups": 1, "rm_sft_prompts": 1, "rm_groups_per_step": 1,
    "rm_corpus_only_steps": 0, "rm_warmup_steps": 0, "rm_toy_steps": 1, "rm_n_embd": 1,
    "rm_n_layer": 1, "rm_n_head": 1, "rm_n_positions": 16, "rm_steps": 1,
    "eval_samples_per_prompt": 2, "eval_corpus_pairs": 1, "sample_batch_size": 1,
    "num_threads": 1, "num_processes": 1,
    # Half of each cost-model batch from corpus reviews, half from policy samples.
    "cost_model_steps": 0, "cost_model_batch_size": 2,
}
_POSITIVE = ("sft_lr", "rm_toy_lr", "rm_lr", "cost_model_lr")


def check_settings(cfg: ToyConfig) -> list[str]:
    """Every setting that cannot make a toy world, one line each (none: it can)."""
    problems = [f"toy.{k}={getattr(cfg, k)!r}: must be >= {v}" for k, v in _AT_LEAST.items()
                if getattr(cfg, k) < v]
    problems += [f"toy.{k}={getattr(cfg, k)!r}: must be > 0" for k in _POSITIVE
                 if not getattr(cfg, k) > 0]
    if not 1 <= cfg.min_units <= cfg.max_units:
        problems.append(f"toy.min_units={cfg.min_units}: must be >= 1 and <= toy.max_units "
                        f"({cfg.max_units})")
    if cfg.max_review_words < cfg.prompt_max_words + 2:
        problems.append(f"toy.max_review_words={cfg.max_review_words}: must leave words after "
                        f"the longest prompt (toy.prompt_max_words={cfg.prompt_max_words})")
    if not 1 <= cfg.prompt_min_words <= cfg.prompt_max_words:
        problems.append(f"toy.prompt_min_words={cfg.prompt_min_words}: must be >= 1 and <= "
                        f"toy.prompt_max_words ({cfg.prompt_max_words})")
    if cfg.n_val_reviews + cfg.n_prompt_reviews >= cfg.n_reviews:
        problems.append(f"toy.n_reviews={cfg.n_reviews}: must exceed toy.n_val_reviews + "
                        f"toy.n_prompt_reviews ({cfg.n_val_reviews + cfg.n_prompt_reviews})")
    if cfg.n_eval_prompts >= cfg.n_prompt_reviews:
        problems.append(f"toy.n_eval_prompts={cfg.n_eval_prompts}: must be below "
                        f"toy.n_prompt_reviews ({cfg.n_prompt_reviews}), which also give the "
                        "training prompts")
    for model in ("policy", "rm"):
        embd, heads = getattr(cfg, f"{model}_n_embd"), getattr(cfg, f"{model}_n_head")
        if heads >= 1 and embd % heads:
            problems.append(f"toy.{model}_n_embd={embd}: must divide by toy.{model}_n_head "
                            f"({heads})")
    if cfg.num_processes > 2:
        problems.append(f"toy.num_processes={cfg.num_processes}: must be 1 or 2")
    if not 0.0 <= cfg.label_noise < 0.5:
        problems.append(f"toy.label_noise={cfg.label_noise}: must be in [0, 0.5)")
    return problems


def _build(cfg: ToyConfig, out: Path, progress: bool) -> dict[str, Any]:
    """Everything of one build, written into `out`; returns the summary (relative paths)."""
    from red_cli.toy.parallel import Worker
    from red_cli.toy.train import quiet_deterministic_torch

    start, cpu_start = time.perf_counter(), time.process_time()
    # Start the worker first: its imports overlap with the corpus stage.
    worker = Worker(cfg.num_threads) if cfg.num_processes > 1 and Worker.available() else None
    try:
        with quiet_deterministic_torch(cfg.num_threads):
            summary = _build_steps(cfg, out, progress, start, worker)
    finally:
        if worker is not None:
            worker.close()
    summary["build_seconds"] = time.perf_counter() - start
    summary["cpu_seconds"] = time.process_time() - cpu_start + sum(
        rm["cpu_seconds"] for name, rm in summary["reward_models"].items()
        if name in summary["rm_in_worker"])
    return summary


class _Progress:
    """Stage timings (`lap`) and tqdm bars of one build."""

    def __init__(self, enabled: bool, start: float):
        self.enabled = enabled
        self.clock = start
        self.timings: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self.clock, 2)
        self.clock = now

    def bar(self, desc: str, total: int):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=f"toy {desc}", disable=not self.enabled, leave=False,
                    dynamic_ncols=True)


def _loss_step(bar) -> Callable[[float], None]:
    """A training-step callback that advances `bar` and shows the loss."""
    def step(loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    return step


def _import_libraries() -> None:
    """Import the heavy libraries up front, so that their cost is the "imports" timing
    rather than part of whichever stage first needs them."""
    import torch  # noqa: F401
    from tqdm.auto import tqdm  # noqa: F401
    from transformers import (  # noqa: F401
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        GenerationConfig,
        GPT2Config,
        GPT2LMHeadModel,
    )

    from red_cli.toy import corpus, cost, train  # noqa: F401
    from red_cli.toy.judge import gold_scores  # noqa: F401
    from red_cli.toy.parallel import RMJob, run_rm_job  # noqa: F401
    from red_cli.toy.tokenizer import train_bpe, train_wordpiece  # noqa: F401


@dataclass
class _Corpus:
    texts: list[str]
    golds: list[float]
    val_idx: list[int]
    prompt_idx: list[int]
    sft_idx: list[int]
    train_prompts: list[str]
    eval_prompts: list[str]

    @property
    def sft_texts(self) -> list[str]:
        return [self.texts[i] for i in self.sft_idx]


@dataclass
class _Tokenizers:
    bpe: Any  # policy tokenizer (left padding)
    xtok: Any  # WordPiece tokenizer of toy_xtok
    special: dict[str, int]  # bos / eos / pad ids of `bpe`, for the model configs


@dataclass
class _PolicySamples:
    rm_prompts: list[str]
    train: Any  # train.Samples: rm_group_size per RM-train prompt
    eval: Any  # train.Samples: eval_samples_per_prompt per eval prompt
    train_gold: list[float]
    eval_gold: list[float]


class _Preferences:
    """Preference matrices of groups, with label noise drawn from the shared group rng."""

    def __init__(self, rng: random.Random, label_noise: float):
        self.rng = rng
        self.label_noise = label_noise
        self.flips = 0

    def encode(self, groups: list) -> list[tuple[list[str], list]]:
        from red_cli.toy import train

        encoded = []
        for g in groups:
            flip = [self.rng.random() < self.label_noise for _ in g.pairs()]
            self.flips += sum(flip)
            encoded.append(([g.prompt + r for r in g.responses],
                            train.preference_matrix(g.golds, flip)))
        return encoded


class _RMTraining:
    """The three RM jobs: progress bars, results, and the worker process that runs the
    remote ones (`toy_xtok`, `toy_bidir`) when there is one."""

    def __init__(self, jobs: dict[str, Any], worker, progress: _Progress):
        self.jobs = jobs
        self.worker = worker
        self.remote = ["toy_xtok", "toy_bidir"] if worker is not None else []
        self.bars = {name: progress.bar(f"rm {name}", job.steps) for name, job in jobs.items()}
        self.steps = {name: _loss_step(b) for name, b in self.bars.items()}
        self.results: dict[str, dict[str, Any]] = {}
        if self.remote:
            worker.submit([jobs[name] for name in self.remote])

    def pump(self, block: bool = False) -> None:
        """Progress and results from the worker (a no-op without one)."""
        if not self.remote:
            return
        for kind, name, payload in self.worker.messages(block):
            if kind == "step":
                self.steps[name](payload)
            else:
                self.results[name] = payload

    def send_samples(self, policy_prefs: list) -> None:
        if self.remote:
            self.worker.send_samples(policy_prefs)

    def train_local_and_wait(self, policy_prefs: list, then: Callable[[], Any] | None
                             ) -> tuple[dict[str, dict[str, Any]], Any]:
        """6. Reward models: `toy` here, the two others in the worker process when there
        is one; then `then()` here (the cost model), before this waits for the worker.
        Returns the RMs' results and what `then` returned (None without it)."""
        from red_cli.toy.parallel import run_rm_job

        try:
            for name, job in self.jobs.items():
                if name not in self.remote:
                    job.samples = policy_prefs

                    def on_step(loss: float, name: str = name) -> None:
                        self.steps[name](loss)
                        self.pump()

                    self.results[name] = run_rm_job(job, on_step)
            then_result = then() if then is not None else None
            while len(self.results) < len(self.jobs):
                self.pump(block=True)
        finally:
            for b in self.bars.values():
                b.close()
        return self.results, then_result


def _build_steps(cfg: ToyConfig, out: Path, progress: bool, start: float,
                 worker) -> dict[str, Any]:
    """The build stages in order; each `lap` closes the timing of the stage above it."""
    _import_libraries()
    prog = _Progress(progress, start)
    prog.lap("imports")

    data = _make_corpus(cfg, out, prog)
    prog.lap("corpus")

    toks = _train_tokenizers(cfg, out, data.sft_texts)
    prog.lap("tokenizers")

    # The group rng is shared, in this order, by corpus groups, their label noise, the
    # held-out corpus pairs and finally the label noise of the policy-sample groups.
    prefs = _Preferences(random.Random(f"{cfg.seed}:groups"), cfg.label_noise)
    corpus_groups, corpus_prefs, eval_groups = _corpus_groups(cfg, data, prefs)
    rms = _RMTraining(_rm_jobs(cfg, out, toks, corpus_prefs), worker, prog)
    prog.lap("pairs")

    policy, sft_loss = _train_policy(cfg, out, data, toks, prog, rms.pump)
    prog.lap("sft")

    samples = _sample_policy(cfg, out, policy, toks.bpe, data, prog, rms.pump)
    policy_groups = _sample_groups(samples.rm_prompts, samples.train, samples.train_gold,
                                   cfg.rm_group_size)
    policy_prefs = prefs.encode(policy_groups)
    eval_groups += _sample_groups(data.eval_prompts, samples.eval, samples.eval_gold,
                                  cfg.eval_samples_per_prompt)
    eval_pairs = _eval_pairs(eval_groups, cfg.eval_margin)
    rms.send_samples(policy_prefs)
    prog.lap("samples")

    train_cost_model = (functools.partial(_train_cost_model, cfg, out, data, samples, prog,
                                          rms.pump) if cfg.cost_model_steps > 0 else None)
    results, cost_result = rms.train_local_and_wait(policy_prefs, then=train_cost_model)
    prog.lap("reward_models")

    ppl = _val_perplexity(cfg, out, toks.bpe, [data.texts[i] for i in data.val_idx])
    rm_summary = _evaluate_rms(out, list(rms.jobs), eval_pairs, results)
    cost_summary = (_evaluate_cost_model(out, eval_groups, cost_result)
                    if cost_result is not None else None)
    prog.lap("evaluate")

    return _summary(
        cfg, data=data, toks=toks, policy=policy, sft_loss=sft_loss, ppl=ppl,
        samples=samples, rm_summary=rm_summary, rm_in_worker=rms.remote,
        corpus_groups=corpus_groups, policy_groups=policy_groups, corpus_prefs=corpus_prefs,
        policy_prefs=policy_prefs, label_flips=prefs.flips, eval_pairs=eval_pairs,
        cost_summary=cost_summary, timings=prog.timings)


def _make_corpus(cfg: ToyConfig, out: Path, prog: _Progress) -> _Corpus:
    """1. Corpus: reviews with gold scores, split by review; prompts from held-out reviews."""
    from red_cli.toy import corpus
    from red_cli.toy.judge import gold_scores

    with prog.bar("corpus", cfg.n_reviews) as b:
        texts, golds = corpus.generate_reviews(cfg.n_reviews, cfg.seed, gold_scores,
                                               max_words=cfg.max_review_words,
                                               progress=b.update,
                                               units=(cfg.min_units, cfg.max_units))
    rng = random.Random(f"{cfg.seed}:splits")
    order = list(range(len(texts)))
    rng.shuffle(order)
    val_idx = order[: cfg.n_val_reviews]
    prompt_idx = order[cfg.n_val_reviews : cfg.n_val_reviews + cfg.n_prompt_reviews]
    sft_idx = order[cfg.n_val_reviews + cfg.n_prompt_reviews :]
    split = {}
    for name, idx in (("val", val_idx), ("prompt", prompt_idx), ("sft", sft_idx)):
        split.update(dict.fromkeys(idx, name))
    _write_jsonl(out / "reviews.jsonl",
                 [{"text": t, "gold": g, "split": split[i]}
                  for i, (t, g) in enumerate(zip(texts, golds))])
    prompts = corpus.make_prompts([texts[i] for i in prompt_idx], rng,
                                  cfg.prompt_min_words, cfg.prompt_max_words)
    if len(prompts) <= cfg.n_eval_prompts:
        raise ValueError(f"toy: only {len(prompts)} distinct prompts for n_eval_prompts="
                         f"{cfg.n_eval_prompts}; raise toy.n_prompt_reviews")
    eval_prompts, train_prompts = prompts[: cfg.n_eval_prompts], prompts[cfg.n_eval_prompts :]
    _write_jsonl(out / "prompts_train.jsonl", [{"prompt": p} for p in train_prompts])
    _write_jsonl(out / "prompts_eval.jsonl", [{"prompt": p} for p in eval_prompts])
    return _Corpus(texts, golds, val_idx, prompt_idx, sft_idx, train_prompts, eval_prompts)


def _train_tokenizers(cfg: ToyConfig, out: Path, sft_texts: list[str]) -> _Tokenizers:
    """2. Tokenizers, trained on the SFT reviews only. RM copies pad on the right."""
    from transformers import AutoTokenizer

    from red_cli.toy.tokenizer import train_bpe, train_wordpiece

    bpe = train_bpe(sft_texts, cfg.vocab_size, padding_side="left",
                    model_max_length=cfg.policy_n_positions)
    bpe.save_pretrained(out / "tokenizer")
    rm_bpe = AutoTokenizer.from_pretrained(out / "tokenizer", padding_side="right",
                                           model_max_length=cfg.rm_n_positions)
    rm_bpe.save_pretrained(out / "tokenizer_rm")
    xtok = train_wordpiece(sft_texts, cfg.xtok_vocab_size, padding_side="right",
                           model_max_length=cfg.rm_n_positions)
    xtok.save_pretrained(out / "tokenizer_xtok")
    special = {"bos_token_id": bpe.bos_token_id, "eos_token_id": bpe.eos_token_id,
               "pad_token_id": bpe.pad_token_id}
    return _Tokenizers(bpe, xtok, special)


def _corpus_groups(cfg: ToyConfig, data: _Corpus, prefs: _Preferences):
    """3. Preference groups from the corpus (K continuations of one prompt: SFT-split
    reviews sharing their first words), and held-out pairs of validation/prompt-split
    reviews. Returns (corpus groups, their preferences, held-out groups)."""
    from red_cli.toy import corpus

    corpus_groups = corpus.same_prefix_groups(
        data.sft_texts, [data.golds[i] for i in data.sft_idx], cfg.rm_corpus_groups,
        cfg.rm_group_size, prefs.rng, cfg.prompt_min_words, cfg.prompt_max_words)
    corpus_prefs = prefs.encode(corpus_groups)
    held_idx = data.val_idx + data.prompt_idx
    eval_groups = corpus.same_prefix_groups(
        [data.texts[i] for i in held_idx], [data.golds[i] for i in held_idx],
        cfg.eval_corpus_pairs, 2, prefs.rng, cfg.prompt_min_words, cfg.prompt_max_words)
    return corpus_groups, corpus_prefs, eval_groups


def _rm_jobs(cfg: ToyConfig, out: Path, toks: _Tokenizers, corpus_prefs: list) -> dict:
    """The three RM jobs. Their first rm_corpus_only_steps steps use corpus groups alone,
    so the worker process can start on them while this process trains and samples the
    policy; the policy-sample groups (`samples`) follow."""
    from red_cli.toy.parallel import RMJob

    bpe, xtok = toks.bpe, toks.xtok
    common = {"corpus": corpus_prefs, "samples": None,
              "corpus_only_steps": cfg.rm_corpus_only_steps,
              "groups_per_step": cfg.rm_groups_per_step, "warmup": cfg.rm_warmup_steps,
              "center_coef": cfg.rm_center_coef}
    gpt2_rm = {"n_positions": cfg.rm_n_positions, "n_embd": cfg.rm_n_embd,
               "n_layer": cfg.rm_n_layer, "n_head": cfg.rm_n_head, "num_labels": 1,
               "use_cache": False, **GPT2_NO_DROPOUT}
    return {
        "toy": RMJob(
            name="toy", out_dir=str(out / RM_DIRS["toy"]),
            tokenizer_dir=str(out / "tokenizer_rm"), arch="gpt2_from_policy",
            init_from=str(out / "policy"), steps=cfg.rm_toy_steps, lr=cfg.rm_toy_lr,
            seed=cfg.seed + 10, **common),
        "toy_xtok": RMJob(
            name="toy_xtok", out_dir=str(out / RM_DIRS["toy_xtok"]),
            tokenizer_dir=str(out / "tokenizer_xtok"), arch="gpt2",
            config={**gpt2_rm, "vocab_size": len(xtok), "bos_token_id": xtok.bos_token_id,
                    "eos_token_id": xtok.eos_token_id, "pad_token_id": xtok.pad_token_id},
            steps=cfg.rm_steps, lr=cfg.rm_lr, seed=cfg.seed + 11, **common),
        "toy_bidir": RMJob(
            name="toy_bidir", out_dir=str(out / RM_DIRS["toy_bidir"]),
            tokenizer_dir=str(out / "tokenizer_rm"), arch="bert",
            config={"vocab_size": len(bpe), "hidden_size": cfg.rm_n_embd,
                    "num_hidden_layers": cfg.rm_n_layer, "num_attention_heads": cfg.rm_n_head,
                    "intermediate_size": 4 * cfg.rm_n_embd,
                    "max_position_embeddings": cfg.rm_n_positions, "type_vocab_size": 1,
                    "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
                    "classifier_dropout": 0.0, "num_labels": 1, **toks.special},
            steps=cfg.rm_steps, lr=cfg.rm_lr, seed=cfg.seed + 12, **common),
    }


def _encode_lm(bpe, texts: list[str], n_positions: int) -> list[list[int]]:
    """bos + text + eos token ids, cut to the policy's context."""
    return [(s + [bpe.eos_token_id])[:n_positions] for s in bpe(texts)["input_ids"]]


def _train_policy(cfg: ToyConfig, out: Path, data: _Corpus, toks: _Tokenizers,
                  prog: _Progress, pump: Callable[[], None]):
    """4. SFT policy: a tiny GPT-2 LM on bos + review + eos. Returns (policy, final loss)."""
    import torch
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

    from red_cli.toy import train

    bpe = toks.bpe
    torch.manual_seed(cfg.seed)
    policy = GPT2LMHeadModel(GPT2Config(
        vocab_size=len(bpe), n_positions=cfg.policy_n_positions, n_embd=cfg.policy_n_embd,
        n_layer=cfg.policy_n_layer, n_head=cfg.policy_n_head, **GPT2_NO_DROPOUT,
        **toks.special,
    ))
    with prog.bar("sft", cfg.sft_steps) as b:
        sft_step = _loss_step(b)

        def on_sft_step(loss: float) -> None:
            sft_step(loss)
            pump()

        sft_loss = train.train_lm(policy, _encode_lm(bpe, data.sft_texts, cfg.policy_n_positions),
                                  bpe.pad_token_id, cfg.sft_steps, cfg.sft_batch_size,
                                  cfg.sft_lr, cfg.sft_warmup_steps, cfg.seed, on_sft_step)
    policy.generation_config = GenerationConfig(
        do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
        max_new_tokens=cfg.max_new_tokens, **toks.special,
    )
    policy.save_pretrained(out / "policy")
    bpe.save_pretrained(out / "policy")
    return policy, sft_loss


def _sample_policy(cfg: ToyConfig, out: Path, policy, bpe, data: _Corpus, prog: _Progress,
                   pump: Callable[[], None]) -> _PolicySamples:
    """5. Policy samples: rm_group_size per RM-train prompt (the second half of the RMs'
    data), eval_samples_per_prompt per eval prompt; gold score of each prompt + response."""
    from red_cli.toy import train
    from red_cli.toy.judge import gold_scores

    k_train, k_eval = cfg.rm_group_size, cfg.eval_samples_per_prompt
    rm_prompts = data.train_prompts[: cfg.rm_sft_prompts]
    eval_prompts = data.eval_prompts
    with prog.bar("samples", k_train * len(rm_prompts) + k_eval * len(eval_prompts)) as b:
        def on_batch(n: int) -> None:
            b.update(n)
            pump()

        train_samples = train.sample(policy, bpe, rm_prompts, k_train, cfg.max_new_tokens,
                                     cfg.sample_batch_size, cfg.seed + 1, on_batch)
        eval_samples = train.sample(policy, bpe, eval_prompts, k_eval, cfg.max_new_tokens,
                                    cfg.sample_batch_size, cfg.seed + 2, on_batch)
    train_gold = gold_scores([p + r for p, r in zip(train_samples.prompts,
                                                     train_samples.responses)])
    eval_gold = gold_scores([p + r for p, r in zip(eval_samples.prompts,
                                                   eval_samples.responses)])
    _write_jsonl(out / "samples_eval.jsonl", [
        {"prompt": p, "response": r, "gold": g, "ended": e}
        for p, r, g, e in zip(eval_samples.prompts, eval_samples.responses, eval_gold,
                              eval_samples.ended)
    ])
    return _PolicySamples(rm_prompts, train_samples, eval_samples, train_gold, eval_gold)


def _sample_groups(prompts: list[str], samples, gold: list[float], k: int) -> list:
    """One group per prompt from its k consecutive (prompt-major) samples."""
    from red_cli.toy import corpus

    return [corpus.Group(p, tuple(samples.responses[j * k : (j + 1) * k]),
                         tuple(gold[j * k : (j + 1) * k]), "sft")
            for j, p in enumerate(prompts)]


def _train_cost_model(cfg: ToyConfig, out: Path, data: _Corpus, samples: _PolicySamples,
                      prog: _Progress, pump: Callable[[], None]) -> dict[str, Any]:
    """6b. Cost model (cost_model_steps > 0), here after `toy`: the same model (GPT-2 from
    the SFT policy, a fresh scalar head, policy BPE padded right) fitted by MSE to the gold
    cost of whole texts, half of each batch SFT-split reviews, half the policy's samples of
    RM-train prompts. Not centred: its score is in gold-cost units (hype words)."""
    import torch
    from transformers import AutoTokenizer

    from red_cli.toy import train
    from red_cli.toy.cost import gold_costs
    from red_cli.toy.parallel import new_scalar_model

    wall, cpu = time.perf_counter(), time.process_time()
    torch.manual_seed(cfg.seed + 13)
    model = new_scalar_model("gpt2_from_policy", {}, str(out / "policy"))
    tok = AutoTokenizer.from_pretrained(out / "tokenizer_rm")
    limit = model.config.max_position_embeddings
    sample_texts = [p + r for p, r in zip(samples.train.prompts, samples.train.responses)]
    sources = [([ids[:limit] for ids in tok(texts)["input_ids"]], gold_costs(texts))
               for texts in (data.sft_texts, sample_texts)]
    with prog.bar("cost model", cfg.cost_model_steps) as b:
        bar_step = _loss_step(b)

        def on_step(loss: float) -> None:
            bar_step(loss)
            pump()

        loss = train.train_regression(model, sources, tok.pad_token_id, cfg.cost_model_steps,
                                      cfg.cost_model_batch_size, cfg.cost_model_lr,
                                      cfg.rm_warmup_steps, cfg.seed + 13, on_step)
    model.save_pretrained(out / COST_MODEL_DIR)
    tok.save_pretrained(out / COST_MODEL_DIR)
    return {
        "final_train_loss": loss,
        "params": sum(t.numel() for t in model.parameters()),
        "architecture": type(model).__name__,
        "n_train": {"corpus": len(data.sft_texts), "sft": len(sample_texts)},
        "train_seconds": time.perf_counter() - wall,
        "cpu_seconds": time.process_time() - cpu,
    }


def _eval_pairs(eval_groups: list, margin: float) -> list[tuple[str, str, float, str]]:
    """(text a, text b, gold a - gold b, source) of every within-group pair whose gold
    scores differ by at least `margin`."""
    return [(g.prompt + g.responses[i], g.prompt + g.responses[j],
             g.golds[i] - g.golds[j], g.source)
            for g in eval_groups for i, j in g.pairs()
            if abs(g.golds[i] - g.golds[j]) >= margin]


def _val_perplexity(cfg: ToyConfig, out: Path, bpe, val_texts: list[str]) -> float:
    """7. Evaluation through the saved files, the way users load them: the policy's
    validation perplexity."""
    from transformers import AutoModelForCausalLM

    from red_cli.toy import train

    loaded_policy = AutoModelForCausalLM.from_pretrained(out / "policy")
    return train.perplexity(loaded_policy, _encode_lm(bpe, val_texts, cfg.policy_n_positions),
                            bpe.pad_token_id)


def _saved_scores(path: Path, texts: list[str]) -> dict[str, float]:
    """text -> score of the model saved at `path`, loaded the way users load it."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from red_cli.toy import train

    return dict(zip(texts, train.score_texts(
        AutoModelForSequenceClassification.from_pretrained(path),
        AutoTokenizer.from_pretrained(path), texts)))


def _pair_accuracy(scores: dict[str, float], eval_pairs: list) -> dict[str, float]:
    """Fraction of `eval_pairs` that `scores` order as gold does: all, corpus, SFT-sample."""
    hits: dict[str, list[bool]] = {"corpus": [], "sft": []}
    for a, b, gold_diff, source in eval_pairs:
        hits[source].append((scores[a] - scores[b] > 0) == (gold_diff > 0))
    every = hits["corpus"] + hits["sft"]
    return {
        "accuracy": sum(every) / max(1, len(every)),
        "accuracy_corpus_pairs": sum(hits["corpus"]) / max(1, len(hits["corpus"])),
        "accuracy_sft_pairs": sum(hits["sft"]) / max(1, len(hits["sft"])),
    }


def _evaluate_rms(out: Path, names: list[str], eval_pairs: list,
                  results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each saved RM, loaded the way users load it: its held-out pairwise accuracy against
    gold, score statistics and training results."""
    eval_texts = sorted({t for a, b, _, _ in eval_pairs for t in (a, b)})
    rm_summary = {}
    for name in names:
        scores = _saved_scores(out / RM_DIRS[name], eval_texts)
        rm_summary[name] = {
            **_pair_accuracy(scores, eval_pairs),
            "score_mean": sum(scores.values()) / max(1, len(scores)),
            "score_std": statistics.pstdev(scores.values()) if scores else 0.0,
            "pooling": "cls (position 0, <bos>)" if name == "toy_bidir" else "last real token",
            "tokenizer": "wordpiece" if name == "toy_xtok" else "policy bpe",
            **results[name],
        }
    return rm_summary


def _evaluate_cost_model(out: Path, eval_groups: list,
                         result: dict[str, Any]) -> dict[str, Any]:
    """The saved cost model against the gold cost on the held-out groups (pairs of
    held-out reviews, SFT samples of eval prompts): pairwise agreement on pairs whose gold
    costs differ, mean absolute error and score statistics over all their texts."""
    from red_cli.toy.cost import HYPE_WORDS, gold_costs

    groups = [dataclasses.replace(g, golds=tuple(gold_costs([g.prompt + r for r in g.responses])))
              for g in eval_groups]
    pairs = _eval_pairs(groups, 1.0)
    gold = {g.prompt + r: c for g in groups for r, c in zip(g.responses, g.golds)}
    texts = sorted(gold)
    scores = _saved_scores(out / COST_MODEL_DIR, texts)
    return {
        **_pair_accuracy(scores, pairs),
        "n_pairs": {"corpus": sum(p[3] == "corpus" for p in pairs),
                    "sft": sum(p[3] == "sft" for p in pairs)},
        "n_texts": len(texts),
        "mae": sum(abs(scores[t] - gold[t]) for t in texts) / len(texts),
        "gold_cost_mean": sum(gold.values()) / len(texts),
        "score_mean": sum(scores.values()) / len(texts),
        "score_std": statistics.pstdev(scores.values()),
        "hype_words": list(HYPE_WORDS),
        "definition": (
            "gold cost: whole-word occurrences of the hype words in prompt + response; "
            "held-out pairs: two continuations of one held-out prompt (the RMs' held-out "
            "groups) whose gold costs differ (by >= 1); correct when the cost model orders "
            "them as the gold cost does; mae over every text of those groups"
        ),
        **result,
    }


def _summary(cfg: ToyConfig, *, data: _Corpus, toks: _Tokenizers, policy, sft_loss: float,
             ppl: float, samples: _PolicySamples, rm_summary: dict, rm_in_worker: list[str],
             corpus_groups: list, policy_groups: list, corpus_prefs: list,
             policy_prefs: list, label_flips: int, eval_pairs: list,
             cost_summary: dict[str, Any] | None, timings: dict[str, float]) -> dict[str, Any]:
    k_train, k_eval = cfg.rm_group_size, cfg.eval_samples_per_prompt
    summary = {
        "format_version": FORMAT_VERSION,
        "config": dataclasses.asdict(cfg),
        "corpus": {
            "n_reviews": len(data.texts),
            "n_sft_reviews": len(data.sft_idx),
            "n_val_reviews": len(data.val_idx),
            "n_prompts_train": len(data.train_prompts),
            "n_prompts_eval": len(data.eval_prompts),
            **_gold_stats(data.golds),
        },
        "tokenizers": {"policy_bpe_vocab": len(toks.bpe), "xtok_wordpiece_vocab": len(toks.xtok)},
        "policy": {
            "params": sum(t.numel() for t in policy.parameters()),
            "val_perplexity": ppl,
            "final_train_loss": sft_loss,
        },
        "sft_samples": {
            **_gold_stats(samples.eval_gold),
            "mean_new_tokens": statistics.mean(samples.eval.new_tokens),
            "frac_ended_with_eos": statistics.mean(samples.eval.ended),
        },
        "reward_models": rm_summary,
        "rm_in_worker": rm_in_worker,
        "rm_train": {
            "n_groups": {"corpus": len(corpus_groups), "sft": len(policy_groups)},
            "n_pairs": {"corpus": sum(int(sum(map(sum, p))) for _, p in corpus_prefs),
                        "sft": sum(int(sum(map(sum, p))) for _, p in policy_prefs)},
            "label_flips": label_flips,
            "definition": (
                f"groups of {k_train} continuations of one prompt (same-prefix SFT-split "
                f"reviews, or {k_train} policy samples of a train prompt); Bradley-Terry loss "
                "on every pair with different gold scores; the first "
                f"min({cfg.rm_corpus_only_steps}, steps / 2) steps on corpus groups only, then "
                "half and half"
            ),
        },
        "eval_pairs": {
            "n": len(eval_pairs),
            "n_corpus": sum(p[3] == "corpus" for p in eval_pairs),
            "n_sft": sum(p[3] == "sft" for p in eval_pairs),
            "margin": cfg.eval_margin,
            "definition": (
                "two continuations of the same held-out prompt: every pair among "
                f"{k_eval} SFT samples per eval prompt, plus pairs of held-out reviews "
                f"sharing their first {cfg.prompt_min_words}-{cfg.prompt_max_words} words; "
                f"kept when their gold scores differ by >= {cfg.eval_margin}; correct when "
                "the RM orders them as the gold judge does"
            ),
        },
        "timings": timings,
    }
    if cost_summary is not None:
        from red_cli.toy.cost import gold_costs

        costs = gold_costs([p + r for p, r in zip(samples.eval.prompts, samples.eval.responses)])
        summary["sft_samples"]["gold_cost_mean"] = statistics.mean(costs)
        summary["sft_samples"]["frac_gold_cost_positive"] = statistics.mean(c > 0 for c in costs)
        summary["cost_model"] = cost_summary
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable rendering of a build summary."""
    c, p, s = summary["corpus"], summary["policy"], summary["sft_samples"]
    ev = summary["eval_pairs"]
    lines = [f"toy task ({summary.get('config_key', '?')}, built in "
             f"{summary['build_seconds']:.0f}s, {summary['cpu_seconds']:.0f} CPU-s)"]
    for name, path in summary.get("paths", {}).items():
        lines.append(f"  {name:<18} {path}")
    lines += [
        f"corpus: {c['n_reviews']} reviews (gold mean {c['gold_mean']:+.3f}, "
        f"{c['frac_positive']:.0%} positive, {c['frac_negative']:.0%} negative); "
        f"prompts {c['n_prompts_train']} train / {c['n_prompts_eval']} eval",
        f"policy: {p['params'] / 1e6:.2f}M params, validation perplexity "
        f"{p['val_perplexity']:.2f}",
        f"SFT samples (n={s['n']}): gold mean {s['gold_mean']:+.3f} std {s['gold_std']:.3f}, "
        f"{s['frac_positive']:.0%} positive, {s['frac_negative']:.0%} negative, "
        f"{s['mean_new_tokens']:.1f} new tokens, {s['frac_ended_with_eos']:.0%} end with eos",
    ]
    if "gold_cost_mean" in s:
        lines.append(f"  gold cost (hype words) mean {s['gold_cost_mean']:.2f}, "
                     f"{s['frac_gold_cost_positive']:.0%} have one or more")
    lines += [
        f"reward models, held-out pairwise accuracy vs gold on {ev['n']} pairs "
        f"(|gold difference| >= {ev['margin']}; {ev['n_sft']} SFT-sample pairs, "
        f"{ev['n_corpus']} corpus pairs):",
    ]
    for name, rm in summary["reward_models"].items():
        lines.append(
            f"  {name:<10} {rm['accuracy']:.3f} (sft {rm['accuracy_sft_pairs']:.3f}, corpus "
            f"{rm['accuracy_corpus_pairs']:.3f})  {rm['architecture']}, "
            f"{rm['params'] / 1e6:.2f}M params, {rm['tokenizer']}, pooled at {rm['pooling']}, "
            f"trained {rm['train_seconds']:.0f}s"
        )
    if "cost_model" in summary:
        cm, n = summary["cost_model"], summary["cost_model"]["n_pairs"]
        lines.append(
            f"cost model, held-out pairwise agreement with the gold cost on {n['sft']} SFT-sample "
            f"+ {n['corpus']} corpus pairs: {cm['accuracy']:.3f} (sft "
            f"{cm['accuracy_sft_pairs']:.3f}, corpus {cm['accuracy_corpus_pairs']:.3f}), MAE "
            f"{cm['mae']:.3f} hype words, {cm['params'] / 1e6:.2f}M params, trained "
            f"{cm['train_seconds']:.0f}s")
    stages = ("imports", "corpus", "tokenizers", "pairs", "sft", "samples", "reward_models",
              "evaluate")
    timings = ", ".join(f"{k} {summary['timings'][k]:.0f}s" for k in stages
                        if k in summary.get("timings", {}))
    lines.append(f"build: {summary['build_seconds']:.0f}s ({timings})")
    return "\n".join(lines)
