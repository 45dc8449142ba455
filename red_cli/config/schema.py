"""Typed schemas of `red train` and `red toy`, registered in Hydra's ConfigStore.

Each YAML file under ``conf/`` is merged into one of these dataclasses, so a misspelt key
or a value of the wrong type fails when Hydra composes the config, with Hydra's own message
naming the key. Checks that types cannot express (ranges, divisibility) live in
``red_cli/config/checks.py`` and run once at start-up. No logic here.

``redistribution`` holds the chosen ``mode`` and every mode's knobs under its own name
(``redistribution.abc.beta``, ``redistribution.td.beta_c``), built from the mode registry
(``red_cli.modes``): an experiment can set each mode's knobs and still compose with
whichever mode the command line picks. ``generation`` does the same for its backends.
"""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass

from omegaconf import MISSING

from red_cli.generation import registry as generation_backends
from red_cli.modes import registry as mode_registry
from red_cli.toy.settings import ToyConfig


@dataclass
class LoraConfig:
    # Adapter rank; 0 trains every weight (no LoRA). With LoRA the reference is the policy
    # with its adapters switched off, so no second copy of the model is held.
    r: int = 0
    alpha: int = 16
    # Dropout inside the adapters (0 keeps PPO's old and new logprobs comparable).
    dropout: float = 0.0
    # Module names to adapt, e.g. [q_proj, v_proj]; empty: peft's default for the
    # architecture; [all-linear]: every linear layer but the output layer.
    target_modules: list[str] = field(default_factory=list)
    # Adapters on the critic's backbone too (its value head always trains in full).
    critic: bool = True


@dataclass
class PolicyConfig:
    # A hub id, a local folder, or `toy:policy` (the embedded task, built on first use).
    path: str = MISSING
    # Tokenizer to use when it is not stored with the model (None: same as path).
    tokenizer: str | None = None
    dtype: str = "float32"  # float32 | bfloat16 | float16
    trust_remote_code: bool = False
    # Applies the tokenizer's chat template to each prompt before generation.
    use_chat_template: bool = False
    # Recompute activations in the backward pass (policy and critic backbones).
    gradient_checkpointing: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class RewardModelConfig:
    name: str = MISSING
    path: str = MISSING
    tokenizer: str | None = None
    dtype: str = "float32"
    trust_remote_code: bool = False
    # What the reward model reads; `{prompt}` and `{response}` are filled in.
    template: str = "{prompt}{response}"
    # Applies the RM tokenizer's chat template (prompt as user, response as assistant).
    use_chat_template: bool = False
    max_length: int = 512
    # Encoders (bidirectional) need one forward per prefix for td; false refuses instead.
    allow_prefix_passes: bool = True
    prefix_chunk_size: int = 64
    # A k-label classifier as a scalar RM: score = sum_k w_k * logit_k, folded into the output
    # layer at load time ([-1, 1]: logit[positive] - logit[negative]). null: num_labels must be 1.
    label_weights: list[float] | None = None
    # The checkpoint's name for its scalar output layer when it is not the architecture's
    # own `score` (safe-rlhf's Beaver models: score_head); null: the architecture's own.
    score_head: str | None = None


@dataclass
class CostModelConfig(RewardModelConfig):
    """A cost model (Safe RLHF: higher is more harmful), read like the reward model and
    redistributed by the same mode; the constraint's settings are ``ppo.lagrangian``."""

    name: str = "none"
    # null: no cost model, plain PPO on the reward.
    path: str | None = None


@dataclass
class DatasetConfig:
    # A hub dataset name, a local file (.jsonl/.json/.csv/.parquet), or `toy:prompts_train`.
    path: str = MISSING
    split: str = "train"
    eval_path: str | None = None
    eval_split: str = "test"
    # How rows become prompts: `column` reads prompt_column; imdb | hh_rlhf | tldr | nectar |
    # pku_saferlhf read that hub dataset's own columns (red_cli/adapters.py).
    adapter: str = "column"
    prompt_column: str = "prompt"
    # A hub dataset's sub-folder, e.g. `helpful-base` of Anthropic/hh-rlhf (null: all of it).
    data_dir: str | None = None
    # Wraps each adapted prompt, e.g. "\n\nHuman: {prompt}\n\nAssistant:" for a base model.
    prompt_template: str = "{prompt}"
    # Length filters on the adapted prompt, in characters (null: no upper bound).
    min_prompt_chars: int = 1
    max_prompt_chars: int | None = None
    # imdb: the prompt is the first k words of a review, k drawn per row in [min, max] from
    # `seed`; reviews shorter than min_text_chars characters are skipped.
    prefix_words: list[int] = field(default_factory=lambda: [2, 8])
    min_text_chars: int = 0
    seed: int = 0
    # Prompts longer than this many policy tokens are dropped, never silently cut.
    max_prompt_length: int = 64
    # What `red eval judge=llm` asks about two responses to these prompts.
    judge_question: str = "Two responses answer the same prompt. Which one is better?"
    # Cap on prompts loaded (None: all).
    max_prompts: int | None = None


def _choice_with_knobs(name: str, choice: str, options: dict[str, type]) -> type:
    """A dataclass with ``choice`` (which option) and one field per option holding its knobs."""
    cls = make_dataclass(name, [(choice, str, MISSING)] + [
        (option, knobs, field(default_factory=knobs)) for option, knobs in options.items()])
    # Importable under this module (pickled by reference, as submitit's launcher does).
    cls.__module__ = __name__
    return cls


# redistribution.mode, and redistribution.<mode>.* for every mode (red_cli/modes/).
RedistributionConfig = _choice_with_knobs(
    "RedistributionConfig", "mode", {name: m.knobs for name, m in mode_registry().items()})
# generation.backend, and generation.<backend>.* for every backend (red_cli/generation/).
GenerationConfig = _choice_with_knobs(
    "GenerationConfig", "backend", {name: b.knobs for name, b in generation_backends().items()})


@dataclass
class LagrangianConfig:
    """PPO-Lagrangian (safe-rlhf's ppo_lag), used when a cost model is configured."""

    # d in E[cost] <= d, in the cost model's units.
    cost_limit: float = 0.0
    # The multiplier's start (0: held at 0, the unconstrained control), its learning rate
    # (SGD on log lambda), its cap (null: none) and the iterations before it first moves.
    lambda_init: float = 1.0
    lambda_lr: float = 0.1
    lambda_max: float | None = 5.0
    update_delay: int = 0
    # Episodes (responses, all ranks) whose mean cost the update compares with the limit.
    cost_window: int = 128


@dataclass
class PPOConfig:
    iterations: int = 60
    # Prompts per iteration summed over ranks; mini batch: samples per optimiser step,
    # summed over ranks; micro batch: samples per forward on one rank.
    rollout_batch_size: int = 64
    mini_batch_size: int = 32
    micro_batch_size: int = 16
    ppo_epochs: int = 4
    # Sampling.
    max_new_tokens: int = 24
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    # Optimisation.
    learning_rate: float = 1e-5
    critic_learning_rate: float = 5e-6
    weight_decay: float = 0.0
    critic_weight_decay: float = 0.0
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    lr_scheduler: str = "constant"  # constant | linear | cosine
    warmup_iterations: int = 0
    max_grad_norm: float = 1.0
    # PPO.
    gamma: float = 1.0
    gae_lambda: float = 0.95
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    ent_coef: float = 0.0
    whiten_advantages: bool = True
    # KL: per-token estimator inside the reward; adaptive controller (Ziegler et al.) or fixed.
    kl_coef: float = 0.05
    kl_estimator: str = "k1"  # k1 | k2 | k3
    adaptive_kl: bool = False
    kl_target: float = 6.0
    kl_horizon: int = 10000
    # Sequence score shaping, always before redistribution (never per token).
    score_norm: str = "none"  # none | batch | running
    score_clip: float | None = None
    # Score given instead of the RM's when a response stops without EOS (None: keep the RM's).
    missing_eos_penalty: float | None = None
    # reward_model | policy
    critic_init: str = "reward_model"
    # How advantages are estimated from per-token rewards: gae (a critic and GAE(gamma,
    # lambda)) | reinforce_pp (rewards to go, batch-normalised; no critic) | rloo | grpo
    # (a group baseline over samples_per_prompt responses; no critic; sequence-level).
    estimator: str = "gae"
    # Responses sampled to each prompt (rloo and grpo need at least 2); the rollout holds
    # rollout_batch_size responses to rollout_batch_size / samples_per_prompt prompts.
    samples_per_prompt: int = 1
    # The cost constraint (with a cost model only).
    lagrangian: LagrangianConfig = field(default_factory=LagrangianConfig)


@dataclass
class DeepSpeedConfig:
    zero_stage: int = 0
    offload_optimizer: bool = False
    offload_param: bool = False
    precision: str = "fp32"  # fp32 | bf16 | fp16


@dataclass
class LoggerConfig:
    wandb_mode: str = "offline"  # offline | online | disabled
    project: str = "red"
    entity: str | None = None
    tags: list[str] = field(default_factory=list)
    # The wandb run's name (null: the run directory's name, mode and seed first) and group
    # (null: the sweep it belongs to, else the experiment).
    name: str | None = None
    group: str | None = None
    progress_bar: bool = True


@dataclass
class LauncherConfig:
    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    # None: a free port is picked.
    master_port: int | None = None
    hostfile: str | None = None
    backend: str = "torchrun"  # torchrun | deepspeed


@dataclass
class TrainConfig:
    policy: PolicyConfig = MISSING
    reward_model: RewardModelConfig = MISSING
    # Runs from before cost models had none: the default keeps them loading as they ran.
    cost_model: CostModelConfig = field(default_factory=CostModelConfig)
    dataset: DatasetConfig = MISSING
    redistribution: RedistributionConfig = MISSING
    generation: GenerationConfig = MISSING
    ppo: PPOConfig = MISSING
    deepspeed: DeepSpeedConfig = MISSING
    logger: LoggerConfig = MISSING
    launcher: LauncherConfig = MISSING
    toy: ToyConfig = field(default_factory=ToyConfig)
    experiment: str | None = None
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    # torch threads per process; 0: the cores this process may use that no other process
    # keeps busy at start-up (fixed for the whole run and kept on resume).
    threads: int = 0
    # Re-decide the thread count of `threads=0` every iteration from the last one's load:
    # fast when other processes come and go, bit-exact only while the load stays the same.
    threads_follow_load: bool = False
    # A run directory to continue from its last checkpoint.
    resume: str | None = None
    checkpoint_every: int = 10
    sample_every: int = 10
    # Where the run writes; filled from Hydra's run/sweep directory.
    output_dir: str = MISSING


@dataclass
class ToyVerbConfig:
    toy: ToyConfig = field(default_factory=ToyConfig)
    json: bool = False
