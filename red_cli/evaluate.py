"""`red eval`: generations of a candidate and a baseline on the same prompts -> judge -> win rate.

1. sides: the candidate is a run directory (its ``checkpoints/final_policy``) or a model
   path; the baseline is ``sft`` (the policy the candidate run started from), another run,
   or a model path;
2. prompts: the first ``prompts.n`` usable prompts of the eval split (the run's
   ``dataset.eval_path`` unless overridden);
3. generation: batch k of prompts is sampled with the seed ``batch_seed(seed, k)`` on BOTH
   sides, with the run's sampling settings, so both sides see the same prompts and seeds and
   the same ``seed`` reproduces every response;
4. judging: a score judge scores each response (ties within ``tie_margin``), the llm judge
   compares each pair in both orders (``red_cli.judges``);
5. statistics: win rate with ties as half, a percentile bootstrap interval over prompts.

Every judged item is appended to ``generations.jsonl`` as soon as its batch is done, so an
interrupted evaluation resumes where it stopped: finished items are neither generated nor
judged again (``eval_config.yaml`` records the settings a resume must match).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from omegaconf import DictConfig, OmegaConf

from red_cli.rundir import load_frozen

log = logging.getLogger("red")


class EvalError(ValueError):
    """A user-fixable problem with `red eval`/`red explain` inputs; the message names the key."""


# --------------------------------------------------------------------------- statistics


class WinRate(NamedTuple):
    """Pairwise outcome counts and the win rate with its bootstrap interval.

    win_rate = (wins + ties / 2) / n; [ci_low, ci_high] is the central ``confidence``
    percentile interval of the win rate over bootstrap resamples of the n prompts.
    """

    n: int
    wins: int
    ties: int
    losses: int
    win_rate: float
    ci_low: float
    ci_high: float


def outcome_from_scores(candidate: float, baseline: float, tie_margin: float = 0.0) -> float:
    """1 if the candidate's score is higher by more than ``tie_margin``, 0 if lower, else 0.5."""
    diff = candidate - baseline
    if diff > tie_margin:
        return 1.0
    if diff < -tie_margin:
        return 0.0
    return 0.5


def win_rate(outcomes: Sequence[float]) -> float:
    """Mean outcome: (wins + ties / 2) / n, outcomes in {0, 0.5, 1}."""
    if len(outcomes) == 0:
        return float("nan")
    return float(np.mean(np.asarray(outcomes, dtype=np.float64)))


def bootstrap_ci(outcomes: Sequence[float], samples: int = 2000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean outcome (Efron & Tibshirani 1993, ch. 13).

    Draw ``samples`` resamples of the n prompts with replacement (numpy PCG64 seeded with
    ``seed``), take each resample's win rate, and return its (1 - confidence) / 2 and
    (1 + confidence) / 2 quantiles (linear interpolation). n = 0 gives (nan, nan).
    """
    x = np.asarray(outcomes, dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    rates = x[rng.integers(0, x.size, size=(samples, x.size))].mean(axis=1)
    alpha = 1.0 - confidence
    low, high = np.quantile(rates, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def summarize(outcomes: Sequence[float], samples: int = 2000, confidence: float = 0.95,
              seed: int = 0) -> WinRate:
    x = np.asarray(outcomes, dtype=np.float64)
    low, high = bootstrap_ci(x, samples, confidence, seed)
    return WinRate(n=int(x.size), wins=int((x == 1.0).sum()), ties=int((x == 0.5).sum()),
                   losses=int((x == 0.0).sum()), win_rate=win_rate(x), ci_low=low, ci_high=high)


# --------------------------------------------------------------------------- sides


@dataclass
class RunInfo:
    """A `red train` run directory and its frozen config."""

    dir: Path
    cfg: DictConfig


@dataclass
class PolicySpec:
    """How to load one side: a policy folder (resolved), its tokenizer and settings."""

    label: str
    path: str
    tokenizer: str
    dtype: str = "float32"
    trust_remote_code: bool = False
    use_chat_template: bool = False


def load_run(path: str) -> RunInfo | None:
    """The run at ``path``, or None if ``path`` is not a run directory (no config.yaml)."""
    run_dir = Path(path).expanduser()
    if not (run_dir / "config.yaml").is_file():
        return None
    return RunInfo(run_dir.resolve(), load_frozen(run_dir))


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=,+-]", "-", text).strip("-")[:80] or "model"


def _final_policy(run: RunInfo, key: str) -> str:
    path = run.dir / "checkpoints" / "final_policy"
    if not (path / "config.json").is_file():
        status = "unknown"
        try:
            status = json.loads((run.dir / "run.json").read_text())["status"]
        except (OSError, ValueError, KeyError):
            pass
        raise EvalError(f"{key}={str(run.dir)!r}: no trained policy at checkpoints/final_policy "
                        f"(run status: {status})")
    return str(path)


def _spec_from_run(run: RunInfo, key: str, label: str) -> PolicySpec:
    pol = run.cfg.policy
    path = _final_policy(run, key)
    return PolicySpec(label, path, path, pol.get("dtype", "float32"),
                      bool(pol.get("trust_remote_code", False)),
                      bool(pol.get("use_chat_template", False)))


def _spec_from_path(path: str, toy_cfg: Any, label: str, like: PolicySpec | None = None) -> PolicySpec:
    from red_cli import models

    real = models.resolve_path(path, toy_cfg)
    if like is None:
        return PolicySpec(label, real, real)
    return PolicySpec(label, real, real, like.dtype, like.trust_remote_code, like.use_chat_template)


def candidate_spec(run_arg: str, toy_cfg: Any, key: str = "run") -> tuple[PolicySpec, RunInfo | None]:
    """The candidate: a run directory's final policy, or a model path (``toy:policy`` too)."""
    run = load_run(run_arg)
    if run is not None:
        return _spec_from_run(run, key, run.dir.name), run
    local = run_arg.startswith((".", "/", "~")) or Path(run_arg).exists()
    if local and not (Path(run_arg).expanduser() / "config.json").is_file():
        raise EvalError(f"{key}={run_arg!r} is neither a run directory (no config.yaml) nor a "
                        "model folder (no config.json)")
    return _spec_from_path(run_arg, toy_cfg, slug(Path(run_arg).name or run_arg)), None


SFT_NEEDS_RUN = ("baseline=sft needs run= to be a run directory (its config names the policy "
                 "the run started from); give baseline= a run directory or a model path")


def baseline_spec(arg: str, candidate: PolicySpec, run: RunInfo | None, toy_cfg: Any) -> PolicySpec:
    """``sft`` (the candidate run's starting policy), another run, or a model path."""
    if arg == "sft":
        if run is None:
            raise EvalError(SFT_NEEDS_RUN)
        pol = run.cfg.policy
        spec = _spec_from_path(pol.path, run.cfg.get("toy"), "sft", candidate)
        if pol.get("tokenizer"):
            from red_cli import models

            spec.tokenizer = models.resolve_path(pol.tokenizer, run.cfg.get("toy"))
        return spec
    other = load_run(arg)
    if other is not None:
        return _spec_from_run(other, "baseline", other.dir.name)
    if arg.startswith((".", "/", "~")) and not (Path(arg).expanduser() / "config.json").is_file():
        raise EvalError(f"baseline={arg!r}: not `sft`, a run directory or a model folder")
    return _spec_from_path(arg, toy_cfg, slug(Path(arg).name or arg), candidate)


def toy_settings(run: RunInfo | None, fallback: Any) -> Any:
    """The toy world a run was trained in (its config.yaml), else the verb's `toy` node."""
    if run is not None and run.cfg.get("toy") is not None:
        return run.cfg.toy
    return fallback


# --------------------------------------------------------------------------- settings


def prompt_settings(prompts: Any, run: RunInfo | None, n: int) -> dict:
    """Where prompts come from: explicit keys, else the run's eval split, else the toy's.

    The run's ``dataset.adapter`` (and its options) applies unless ``prompts.column`` names a
    plain column; the run's ``data_dir`` only when the path is the run's too."""
    from red_cli.adapters import options_from

    ds = run.cfg.dataset if run is not None else None
    path = prompts.path
    split = prompts.split
    from_run = path is None and ds is not None
    if from_run:
        path = ds.get("eval_path") or ds.path
        split = split or (ds.get("eval_split") if ds.get("eval_path") else ds.get("split"))
    out = {
        "path": path or "toy:prompts_eval",
        "split": split or "test",
        "column": prompts.column or (ds.prompt_column if ds is not None else "prompt"),
        "n": int(n),
        "max_prompt_length": int(prompts.max_prompt_length or
                                 (ds.get("max_prompt_length") if ds is not None else None) or 64),
    }
    adapter = ds.get("adapter", "column") if ds is not None and prompts.column is None else "column"
    if adapter != "column":
        # Only then: an evaluation made before adapters existed keeps its fingerprint.
        out.update(adapter=adapter, adapter_options=options_from(ds),
                   data_dir=ds.get("data_dir") if from_run else None)
    return out


def read_prompts(prompt_cfg: dict, toy_cfg: Any) -> list[str]:
    """The prompt texts :func:`prompt_settings` describes."""
    from red_cli.data import load_prompts

    return load_prompts(prompt_cfg["path"], prompt_cfg["split"], prompt_cfg["column"],
                        key="prompts.path", toy_cfg=toy_cfg,
                        adapter=prompt_cfg.get("adapter", "column"),
                        options=prompt_cfg.get("adapter_options"), data_dir=prompt_cfg.get("data_dir"))


def sampling_settings(sampling: Any, run: RunInfo | None) -> dict:
    """Sampling: explicit keys, else the run's `ppo` settings, else the PPO defaults."""
    from red_cli.config import PPOConfig

    ppo = run.cfg.ppo if run is not None else OmegaConf.structured(PPOConfig)
    out = {}
    for key in ("max_new_tokens", "temperature", "top_k", "top_p"):
        value = sampling.get(key)
        out[key] = ppo.get(key) if value is None else value
    return out


def batch_seed(seed: int, batch_index: int) -> int:
    """The sampling seed of prompt batch ``batch_index`` (the same on both sides)."""
    return seed * 1_000_003 + batch_index


# --------------------------------------------------------------------------- generation


class LoadedPolicy(NamedTuple):
    spec: PolicySpec
    model: Any
    tokenizer: Any


def load_side(spec: PolicySpec, device: str) -> LoadedPolicy:
    from red_cli import models

    tokenizer = models.load_tokenizer(spec.tokenizer, spec.trust_remote_code)
    model = models.load_policy(spec.path, spec.dtype, spec.trust_remote_code).to(device)
    model.eval()
    return LoadedPolicy(spec, model, tokenizer)


def usable_prompts(texts: list[str], tokenizer, n: int, max_prompt_length: int,
                   use_chat_template: bool = False) -> list[str]:
    """The first ``n`` prompts that encode to 1..max_prompt_length policy tokens."""
    from red_cli.data import encode_prompt

    kept = []
    for text in texts:
        if 0 < len(encode_prompt(tokenizer, text, use_chat_template)) <= max_prompt_length:
            kept.append(text)
            if len(kept) == n:
                break
    return kept


def sample(side: LoadedPolicy, prompts: list[str], sampling: dict, seed: int, device: str):
    """Responses of one side to ``prompts``, sampled under ``torch.manual_seed(seed)``."""
    import torch

    from red_cli.data import encode_prompt, left_pad
    from red_cli.rollout import generate

    tok = side.tokenizer
    ids, mask = left_pad([encode_prompt(tok, p, side.spec.use_chat_template) for p in prompts],
                         tok.pad_token_id)
    torch.manual_seed(seed)
    return generate(side.model, tok, prompts, ids.to(device), mask.to(device), **sampling)


# --------------------------------------------------------------------------- the evaluation


def judge_label(judge_cfg: Any) -> str:
    """Short name of a judge for directory names: gold, rm-<preset>, llm-<model>."""
    if judge_cfg.kind == "reward_model":
        return "rm-" + slug(judge_cfg.preset if judge_cfg.path is None else Path(judge_cfg.path).name)
    if judge_cfg.kind == "llm":
        return "llm-" + slug(judge_cfg.model)
    return judge_cfg.kind


# Judge keys that change how requests are sent, not what the answers are.
_TRANSPORT_KEYS = ("concurrency", "max_retries", "backoff_s", "timeout_s", "api_key_env")


def _fingerprint(cfg: DictConfig, cand: PolicySpec, base: PolicySpec, prompts: dict,
                 sampling: dict) -> dict:
    judge = {k: v for k, v in OmegaConf.to_container(cfg.judge, resolve=True).items()
             if k not in _TRANSPORT_KEYS}
    # prompts.n is left out: items are the first n usable prompts, so a larger n extends
    # a finished evaluation instead of starting it again.
    prompts = {k: v for k, v in prompts.items() if k != "n"}
    return {"candidate": cand.path, "baseline": base.path, "judge": judge, "prompts": prompts,
            "sampling": sampling, "seed": int(cfg.seed), "batch_size": int(cfg.batch_size),
            "tie_margin": float(cfg.tie_margin)}


def output_dir(cfg: DictConfig, cand: PolicySpec, base: PolicySpec, run: RunInfo | None) -> Path:
    if cfg.output_dir:
        return Path(cfg.output_dir)
    name = f"{judge_label(cfg.judge)}_vs_{base.label}"
    if run is not None:
        return run.dir / "eval" / name
    return Path("outputs") / "eval" / cand.label / name


def _read_done(path: Path) -> dict[int, dict]:
    done: dict[int, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a line cut short by an interruption: that item is redone
                done[row["index"]] = row
    return done


def _prepare_dir(out: Path, fingerprint: dict, overwrite: bool) -> dict[int, dict]:
    """Create ``out``; return the finished items a resume keeps (none if settings changed)."""
    out.mkdir(parents=True, exist_ok=True)
    gens, frozen = out / "generations.jsonl", out / "eval_config.yaml"
    if overwrite:
        gens.unlink(missing_ok=True)
    elif gens.exists() and frozen.exists():
        before = OmegaConf.to_container(OmegaConf.load(frozen))
        if before != fingerprint:
            changed = sorted(k for k in fingerprint if before.get(k) != fingerprint[k])
            raise EvalError(
                f"{out} holds an evaluation with other settings ({', '.join(changed)} differ); "
                "pass overwrite=true to start again or output_dir=... to keep both"
            )
    OmegaConf.save(OmegaConf.create(fingerprint), frozen)
    return _read_done(gens)


def run_eval(cfg: DictConfig) -> dict:
    """Evaluate as configured; write eval.json, generations.jsonl; return the eval.json dict."""
    from red_cli import distributed
    from red_cli.judges import JudgeError, build_judge, load_rm_preset

    device = distributed.pick_device(cfg.device)
    if cfg.baseline == "sft" and load_run(cfg.run) is None:
        raise EvalError(SFT_NEEDS_RUN)  # before a `toy:` candidate path builds the toy world
    cand_spec, run = candidate_spec(cfg.run, cfg.toy)
    toy = toy_settings(run, cfg.toy)
    base_spec = baseline_spec(cfg.baseline, cand_spec, run, toy)
    prompt_cfg = prompt_settings(cfg.prompts, run, cfg.prompts.n)
    sampling = sampling_settings(cfg.sampling, run)
    if cfg.judge.kind == "gold" and not str(prompt_cfg["path"]).startswith("toy:"):
        log.warning("judge=gold is the toy world's sentiment judge; prompts %s are not the toy's",
                    prompt_cfg["path"])
    if cfg.judge.kind == "reward_model":
        rm_path = load_rm_preset(cfg.judge.preset, cfg.judge.path).path  # a bad preset fails here
        if run is not None and rm_path == run.cfg.reward_model.path:
            log.warning("judge=reward_model scores with %s, the reward model the run was trained "
                        "against: its win rate measures optimisation, not quality", rm_path)

    out = output_dir(cfg, cand_spec, base_spec, run)
    done = _prepare_dir(out, _fingerprint(cfg, cand_spec, base_spec, prompt_cfg, sampling),
                        cfg.overwrite)

    cand = load_side(cand_spec, device)
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
        base = load_side(base_spec, device)
        judge = build_judge(cfg.judge, toy, device)
        try:
            _judge_all(cfg, cand, base, judge, prompts, done, sampling, device, out)
        except JudgeError as err:
            raise JudgeError(f"{err}\n{len(done)} of {len(prompts)} items are saved in {out}; "
                             "the same command resumes from there") from err

    rows = [done[i] for i in range(len(prompts)) if i in done]
    result = _result(cfg, rows, cand_spec, base_spec, out)
    (out / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    print(format_result(result))
    return result


def _judge_all(cfg: DictConfig, cand: LoadedPolicy, base: LoadedPolicy, judge,
               prompts: list[str], done: dict[int, dict], sampling: dict, device: str,
               out: Path) -> None:
    """Generate and judge every unfinished batch, appending finished items as they come."""
    with (out / "generations.jsonl").open("a") as f:
        for k in range(0, len(prompts), cfg.batch_size):
            idx = list(range(k, min(k + cfg.batch_size, len(prompts))))
            if all(i in done for i in idx):
                continue
            rows = _judge_batch(cand, base, judge, [prompts[i] for i in idx], idx, sampling,
                                batch_seed(cfg.seed, k // cfg.batch_size), cfg.tie_margin, device)
            for row in rows:
                if row["index"] not in done:
                    done[row["index"]] = row
                    f.write(json.dumps(row) + "\n")
            f.flush()


def _judge_batch(cand: LoadedPolicy, base: LoadedPolicy, judge, prompts: list[str],
                 indices: list[int], sampling: dict, seed: int, tie_margin: float,
                 device: str) -> list[dict]:
    cand_out = sample(cand, prompts, sampling, seed, device)
    base_out = sample(base, prompts, sampling, seed, device)
    # The same text is the same answer: a tie, whatever float noise (padding, batch
    # composition) a scorer adds, and no request to a paid judge.
    same = [c == b for c, b in zip(cand_out.responses, base_out.responses)]
    rows = [{"index": i, "seed": seed, "prompt": prompts[j], "candidate": cand_out.responses[j],
             "baseline": base_out.responses[j]} for j, i in enumerate(indices)]
    if hasattr(judge, "score"):
        cs = judge.score(cand_out, cand.tokenizer)
        bs = judge.score(base_out, base.tokenizer)
        for j, row in enumerate(rows):
            row.update(candidate_score=cs[j], baseline_score=bs[j],
                       outcome=0.5 if same[j] else outcome_from_scores(cs[j], bs[j], tie_margin))
        return rows
    ask = [j for j in range(len(rows)) if not same[j]]
    verdicts = judge.compare([(prompts[j], cand_out.responses[j], base_out.responses[j])
                              for j in ask]) if ask else []
    for row in rows:
        row.update(answers=[None, None], malformed=0, outcome=0.5)
    for j, v in zip(ask, verdicts):
        rows[j].update(answers=v.answers, malformed=v.malformed, outcome=v.outcome)
    return rows


def _result(cfg: DictConfig, rows: list[dict], cand: PolicySpec, base: PolicySpec,
            out: Path) -> dict:
    outcomes = [r["outcome"] for r in rows if r["outcome"] is not None]
    stats = summarize(outcomes, cfg.bootstrap_samples, cfg.confidence, cfg.seed)

    def mean(key: str) -> float | None:
        vals = [r[key] for r in rows if r.get(key) is not None]
        return float(np.mean(vals)) if vals else None

    stats = stats._replace(**{k: None for k in ("win_rate", "ci_low", "ci_high")
                              if math.isnan(getattr(stats, k))})  # n = 0: JSON has no NaN
    return {
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


def format_result(result: dict) -> str:
    """The console table of one evaluation (Markdown)."""
    from red_cli.report import fmt, markdown_table

    pct = round(100 * result["confidence"])
    headers = ["judge", "candidate", "baseline", "n", "wins", "ties", "losses", "malformed",
               "win rate", f"{pct}% CI", "candidate mean", "baseline mean"]
    row = [result["judge"], result["candidate"], result["baseline"], result["n"], result["wins"],
           result["ties"], result["losses"], result["malformed"], fmt(result["win_rate"]),
           f"[{fmt(result['ci_low'])}, {fmt(result['ci_high'])}]",
           fmt(result["candidate_mean"]), fmt(result["baseline_mean"])]
    return markdown_table(headers, [row])
