"""Typed schemas of `red eval`, `red report` and `red explain`, registered in Hydra's ConfigStore.

Same rules as ``red_cli/config/schema.py``: a misspelt key or a wrong type fails when Hydra
composes the config; range checks live in ``red_cli/config/checks.py``; no logic here.

Each judge kind has a schema of its own (``conf/judge/<kind>.yaml`` extends
``schema/judge/<kind>``), so ``judge.base_url`` is a knob under llm and a typo under gold.
Keys left ``null`` under ``prompts`` and ``sampling`` are taken from the candidate run's
config.yaml (its eval split, its PPO sampling settings), so both sides of a comparison are
sampled the way the run was trained.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from red_cli.config.schema import GenerationConfig
from red_cli.toy.settings import ToyConfig


@dataclass
class JudgeBase:
    kind: str = MISSING


@dataclass
class GoldJudgeConfig(JudgeBase):
    """The toy world's VADER judge (red_cli.toy.judge) on prompt + response."""

    kind: str = "gold"


@dataclass
class RewardModelJudgeConfig(JudgeBase):
    """A reward model's sequence score. ``preset`` names a file of conf/reward_model/."""

    kind: str = "reward_model"
    # Ideally not the reward model the run was trained against (a warning says so).
    preset: str = "toy_xtok"
    # Overrides the preset's path (a local folder or hub id), keeping its other settings.
    path: str | None = None


@dataclass
class LLMJudgeConfig(JudgeBase):
    """A pairwise judge behind an OpenAI-compatible /chat/completions endpoint.

    Each pair is asked in both orders (candidate first, then baseline first) to cancel
    position bias. The API key is read from the environment variable named by
    ``api_key_env`` at request time and is never written anywhere.
    """

    kind: str = "llm"
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = MISSING
    api_key_env: str = "OPENAI_API_KEY"
    system_prompt: str = "You are a careful, impartial judge of text quality."
    # Filled with {question}, {prompt}, {response_a}, {response_b}; the answer must be A or B.
    user_template: str = MISSING
    # What "better" means (null: the evaluated run's dataset.judge_question).
    question: str | None = None
    temperature: float = 0.0
    max_tokens: int = 8
    # Parallel HTTP requests in flight.
    concurrency: int = 4
    # Attempts after the first one, for connection errors, timeouts, HTTP 429 and 5xx.
    max_retries: int = 3
    # Seconds before the first retry; doubled before each further one.
    backoff_s: float = 1.0
    timeout_s: float = 60.0


@dataclass
class PromptSourceConfig:
    # null: the candidate run's dataset.eval_path (else the toy eval prompts).
    path: str | None = None
    split: str | None = None
    column: str | None = None
    # Prompts longer than this many policy tokens are skipped (null: the run's setting).
    max_prompt_length: int | None = None


@dataclass
class PromptsConfig(PromptSourceConfig):
    # How many prompts, from the start of the split.
    n: int = 64


@dataclass
class SamplingConfig:
    # null: the candidate run's ppo.* setting (else the PPO defaults).
    max_new_tokens: int | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None


@dataclass
class EvalConfig:
    judge: Any = MISSING
    # Candidate: a run directory (its checkpoints/final_policy) or a model path (`toy:policy`).
    run: str = MISSING
    # `sft` (the policy the candidate run started from), another run directory, or a model path.
    baseline: str = "sft"
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    # How both sides sample (conf/generation/).
    generation: GenerationConfig = MISSING
    # Prompts per generation batch; batch k is sampled with seed (seed, k) on both sides.
    batch_size: int = 16
    seed: int = 0
    # |score difference| <= tie_margin counts as a tie (score judges).
    tie_margin: float = 0.0
    bootstrap_samples: int = 2000
    confidence: float = 0.95
    # The cost over which a response counts as over the limit (cost columns: a run with a cost
    # model, or toy prompts' gold cost). null: the run's ppo.lagrangian.cost_limit with a cost
    # model, else no limit (mean cost only).
    cost_limit: float | None = None
    device: str = "auto"  # auto | cpu | cuda
    # Toy build settings when neither side is a run (a run brings its own).
    toy: ToyConfig = field(default_factory=ToyConfig)
    # null: <candidate run>/eval/<judge>_vs_<baseline>/ (outputs/eval/... for a model path).
    output_dir: str | None = None
    # Start again instead of resuming from an existing generations.jsonl.
    overwrite: bool = False


@dataclass
class ReportConfig:
    # Multirun directories and/or run directories (`red report DIR ...` fills this).
    runs: list[str] = MISSING
    # Metric whose curve and threshold crossing are reported, and the gold metric.
    score_metric: str = "objective/score"
    gold_metric: str = "objective/gold"
    # KL to the reference policy: curves.png's KL panel and frontier.png's x axis.
    kl_metric: str = "objective/kl"
    # "final" is the mean of the last `final_window` logged iterations.
    final_window: int = 1
    # Moving-average window for curves and the threshold crossing.
    smooth: int = 1
    # Iterations until the smoothed metric first reaches this (null: column left out)...
    threshold: float | None = None
    # ...or until it reaches this group's final mean (a label as printed in the table's
    # first column, e.g. `redistribution=sparse`, or its values alone: `sparse`):
    # "iterations to match the baseline".
    threshold_group: str | None = None
    # Which metric the threshold is on: score | gold.
    threshold_metric: str = "score"
    # Which `red eval` results count as "vs SFT": eval/<judge>_vs_sft/eval.json.
    win_rate_judge: str = "gold"
    # Shaded band around each group's mean curve: se2 (+-2 standard errors) | minmax | none.
    band: str = "se2"
    # Override keys ignored when grouping runs (the seed, and bookkeeping keys).
    ignore_keys: list[str] = field(
        default_factory=lambda: ["seed", "resume", "output_dir", "logger", "launcher.master_port"]
    )
    # null: the multirun directory (the common parent for several inputs).
    output_dir: str | None = None
    # false: a folder that already holds a report (table.md) keeps it; the new one goes to
    # its subfolder report_2 (report_3, ...). true: write over it.
    overwrite: bool = False


@dataclass
class ExplainConfig:
    # A run directory or a model path (`red explain DIR` fills this).
    run: str = MISSING
    n_samples: int = 8
    modes: list[str] = field(default_factory=lambda: ["sparse", "td", "abc"])
    # null: the run's reward model (the one it was trained against); else a conf/reward_model preset.
    reward_model: str | None = None
    prompts: PromptSourceConfig = field(default_factory=PromptSourceConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    generation: GenerationConfig = MISSING
    seed: int = 0
    device: str = "auto"
    toy: ToyConfig = field(default_factory=ToyConfig)
    # null: <run>/explain/ (outputs/explain/<model name>/ for a model path).
    output_dir: str | None = None


# judge kind -> its schema (`conf/judge/<kind>.yaml` extends `schema/judge/<kind>`).
JUDGE_SCHEMAS = {"gold": GoldJudgeConfig, "reward_model": RewardModelJudgeConfig,
                 "llm": LLMJudgeConfig}
