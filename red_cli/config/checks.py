"""Start-up checks that types cannot express, and the sizes derived from the config.

Every check names the key, the value and what is allowed, so a user's typo costs one line
of reading, not a traceback from deep inside a library. The config is never written back:
derived sizes are computed by ``red_cli.train.setup.derived_sizes``. One ``validate_<verb>``
per verb.
"""

from __future__ import annotations

from typing import Any

from red_cli.errors import ConfigError
from red_cli.generation import backend_choices
from red_cli.generation import registry as generation_backends
from red_cli.modes import registry as mode_registry
from red_cli.toy import is_toy

KL_ESTIMATORS = ("k1", "k2", "k3")
LR_SCHEDULERS = ("constant", "linear", "cosine")
SCORE_NORMS = ("none", "batch", "running")
CRITIC_INITS = ("reward_model", "policy")
# The names of red_cli.train.estimators.ESTIMATORS (a test keeps the two equal).
ESTIMATORS = ("gae", "reinforce_pp", "rloo", "grpo")
# Estimators that see only a response's sum of rewards (a group baseline on the sequence).
SEQUENCE_ESTIMATORS = ("rloo", "grpo")
DTYPES = ("float32", "bfloat16", "float16")
PRECISIONS = ("fp32", "bf16", "fp16")
WANDB_MODES = ("offline", "online", "disabled")
LAUNCHER_BACKENDS = ("torchrun", "deepspeed")
DEVICES = ("auto", "cpu", "cuda")
# The keys of red_cli.data.adapters.ADAPTERS (a test keeps the two equal).
DATASET_ADAPTERS = ("column", "imdb", "hh_rlhf", "tldr", "nectar", "pku_saferlhf")


class Collector:
    """Every problem of a config, gathered so that one message lists them all."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def raise_if_any(self) -> None:
        if self.errors:
            raise ConfigError("invalid config:\n  " + "\n  ".join(self.errors))

    def require(self, ok: bool, key: str, value: Any, allowed: str) -> None:
        if not ok:
            self.errors.append(f"{key}={value!r}: {allowed}")

    def choice(self, key: str, value: Any, choices: tuple) -> None:
        self.require(value in choices, key, value, "must be one of " + ", ".join(choices))


def _check_generation(c, gen: Any) -> None:
    """generation.backend, and the knobs of every backend it may run (auto: all of them)."""
    c.choice("generation.backend", gen.backend, backend_choices())
    backends = generation_backends()
    for name in (backends if gen.backend == "auto" else [gen.backend] if gen.backend in backends
                 else []):
        for key, value, allowed in backends[name].check(gen[name]):
            c.errors.append(f"generation.{name}.{key}={value!r}: {allowed}")


def looks_local(path: str) -> bool:
    """A path the user means as a file or folder here (hub ids like `org/name-1.5` are not)."""
    return path.startswith(("/", "./", "../", "~"))


PATH_KEYS = ("policy.path", "policy.tokenizer", "reward_model.path", "reward_model.tokenizer",
             "cost_model.path", "cost_model.tokenizer", "dataset.path", "dataset.eval_path",
             "launcher.hostfile")


def check_paths(cfg: Any) -> None:
    """Local paths named in the config must exist: checked before a run directory is made."""
    from pathlib import Path

    from omegaconf import OmegaConf

    missing = []
    for key in PATH_KEYS:
        value = OmegaConf.select(cfg, key)
        if value and looks_local(str(value)) and not Path(str(value)).expanduser().exists():
            missing.append(f"{key}={value!r}: no such file or directory")
    if missing:
        raise ConfigError("invalid config:\n  " + "\n  ".join(missing))


def wandb_login_problem() -> str | None:
    """Why `logger=online` would fail for want of a login, or None: wandb reads its key from
    WANDB_API_KEY or the api.wandb.ai entry `wandb login` writes to ~/.netrc."""
    import netrc
    import os

    if os.environ.get("WANDB_API_KEY"):
        return None
    try:
        hosts = netrc.netrc(os.environ.get("NETRC")).hosts
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        hosts = {}
    if any("wandb" in host for host in hosts):
        return None
    return ("logger.wandb_mode='online': no wandb login (WANDB_API_KEY is unset and ~/.netrc "
            "has no api.wandb.ai entry); run `wandb login`, or use logger=offline (sync later "
            "with `wandb sync`) or logger=disabled")


def check_environment(cfg: Any) -> None:
    """What a config needs from this machine (paths that must exist, a wandb login): checked
    before a run directory is made."""
    check_paths(cfg)
    problem = wandb_login_problem() if cfg.logger.wandb_mode == "online" else None
    if problem:
        raise ConfigError(problem)


def validate_train(cfg: Any, world_size: int | None = None) -> None:
    """Raise :class:`ConfigError` listing every invalid value of a composed train config."""
    c = Collector()
    # At least 1: a zero or negative count is reported below, not divided by.
    world = max(1, world_size or cfg.launcher.nproc_per_node * cfg.launcher.nnodes)

    modes = mode_registry()
    mode = cfg.redistribution.mode
    c.choice("redistribution.mode", mode, tuple(modes))
    if mode in modes:
        for key, value, allowed in modes[mode].check(cfg.redistribution[mode]):
            c.errors.append(f"redistribution.{mode}.{key}={value!r}: {allowed}")
    _check_generation(c, cfg.generation)

    p = cfg.ppo
    for key in ("iterations", "rollout_batch_size", "mini_batch_size", "micro_batch_size",
                "ppo_epochs", "max_new_tokens"):
        c.require(getattr(p, key) >= 1, f"ppo.{key}", getattr(p, key), "must be >= 1")
    for key in ("learning_rate", "critic_learning_rate", "cliprange", "cliprange_value",
                "temperature", "kl_horizon", "kl_target"):
        c.require(getattr(p, key) > 0, f"ppo.{key}", getattr(p, key), "must be > 0")
    for key in ("weight_decay", "critic_weight_decay", "vf_coef", "ent_coef", "kl_coef",
                "warmup_iterations", "top_k", "max_grad_norm"):
        c.require(getattr(p, key) >= 0, f"ppo.{key}", getattr(p, key), "must be >= 0")
    c.require(0.0 < p.gamma <= 1.0, "ppo.gamma", p.gamma, "must be in (0, 1]")
    c.require(0.0 <= p.gae_lambda <= 1.0, "ppo.gae_lambda", p.gae_lambda, "must be in [0, 1]")
    c.require(0.0 < p.top_p <= 1.0, "ppo.top_p", p.top_p, "must be in (0, 1]")
    c.require(len(p.adam_betas) == 2 and all(0.0 <= b < 1.0 for b in p.adam_betas),
              "ppo.adam_betas", list(p.adam_betas), "must be two numbers in [0, 1)")
    c.choice("ppo.kl_estimator", p.kl_estimator, KL_ESTIMATORS)
    c.choice("ppo.lr_scheduler", p.lr_scheduler, LR_SCHEDULERS)
    c.choice("ppo.score_norm", p.score_norm, SCORE_NORMS)
    c.choice("ppo.critic_init", p.critic_init, CRITIC_INITS)
    c.choice("ppo.estimator", p.estimator, ESTIMATORS)
    k = p.samples_per_prompt
    c.require(k >= 1, "ppo.samples_per_prompt", k, "must be >= 1")
    if p.estimator in SEQUENCE_ESTIMATORS:
        c.require(k >= 2, "ppo.samples_per_prompt", k,
                  f"ppo.estimator={p.estimator} compares responses to the same prompt: give "
                  "at least 2")
        if mode in modes and modes[mode].dense:
            c.errors.append(
                f"redistribution={mode} with ppo.estimator={p.estimator}: a sequence-level "
                "baseline gives every token of a response the same advantage, so a mode's "
                "per-token shape cancels out (only its sum counts); compare modes with "
                "ppo.estimator=gae or reinforce_pp, or use redistribution=sparse")
    c.require(p.score_clip is None or p.score_clip > 0, "ppo.score_clip", p.score_clip,
              "must be > 0 or null")
    if p.rollout_batch_size >= 1 and p.mini_batch_size >= 1 and p.micro_batch_size >= 1:
        c.require(p.rollout_batch_size % (world * max(1, p.samples_per_prompt)) == 0,
                  "ppo.rollout_batch_size", p.rollout_batch_size,
                  f"must be divisible by the number of ranks x ppo.samples_per_prompt ({world} "
                  f"x {p.samples_per_prompt})")
        c.require(p.rollout_batch_size % p.mini_batch_size == 0, "ppo.rollout_batch_size",
                  p.rollout_batch_size, f"must be divisible by ppo.mini_batch_size ({p.mini_batch_size})")
        c.require(p.mini_batch_size % (p.micro_batch_size * world) == 0, "ppo.mini_batch_size",
                  p.mini_batch_size,
                  f"must be divisible by ppo.micro_batch_size x ranks ({p.micro_batch_size} x {world})")

    c.choice("policy.dtype", cfg.policy.dtype, DTYPES)
    lora = cfg.policy.lora
    c.require(lora.r >= 0, "policy.lora.r", lora.r, "must be >= 0 (0: no LoRA)")
    c.require(lora.alpha > 0, "policy.lora.alpha", lora.alpha, "must be > 0")
    c.require(0.0 <= lora.dropout < 1.0, "policy.lora.dropout", lora.dropout, "must be in [0, 1)")
    targets = list(lora.target_modules)
    c.require("all-linear" not in targets or targets == ["all-linear"],
              "policy.lora.target_modules", targets,
              "[all-linear] stands alone; otherwise list module names")
    scorers = ("reward_model", "cost_model") if cfg.cost_model.path else ("reward_model",)
    for g in scorers:
        node = cfg[g]
        c.choice(f"{g}.dtype", node.dtype, DTYPES)
        c.require(node.max_length >= 2, f"{g}.max_length", node.max_length, "must be >= 2")
        c.require(node.prefix_chunk_size >= 1, f"{g}.prefix_chunk_size", node.prefix_chunk_size,
                  "must be >= 1")
        c.require("{response}" in node.template, f"{g}.template", node.template,
                  "must contain {response}")
        c.require(node.label_weights is None or len(node.label_weights) >= 1,
                  f"{g}.label_weights", node.label_weights, "must be null or one weight per label")
        c.require(node.score_head is None or node.label_weights is None, f"{g}.score_head",
                  node.score_head, f"a one-output head needs no {g}.label_weights: set one of them")
    if cfg.cost_model.path:
        _check_lagrangian(c, p.lagrangian)
        if cfg.cost_model.path == "toy:cost_model":
            c.require(cfg.toy.get("cost_model_steps", 0) > 0, "cost_model.path",
                      cfg.cost_model.path, "this toy world has no cost model: use toy=safe (or "
                      "set toy.cost_model_steps > 0)")
    ds = cfg.dataset
    c.require(ds.max_prompt_length >= 1, "dataset.max_prompt_length", ds.max_prompt_length,
              "must be >= 1")
    c.choice("dataset.adapter", ds.adapter, DATASET_ADAPTERS)
    c.require("{prompt}" in ds.prompt_template, "dataset.prompt_template", ds.prompt_template,
              "must contain {prompt}")
    c.require(ds.min_prompt_chars >= 0, "dataset.min_prompt_chars", ds.min_prompt_chars,
              "must be >= 0")
    c.require(ds.max_prompt_chars is None or ds.max_prompt_chars >= max(ds.min_prompt_chars, 1),
              "dataset.max_prompt_chars", ds.max_prompt_chars,
              "must be null or >= max(dataset.min_prompt_chars, 1)")
    pw = list(ds.prefix_words)
    c.require(len(pw) == 2 and 1 <= pw[0] <= pw[1], "dataset.prefix_words", pw,
              "must be [min, max] words with 1 <= min <= max")
    c.require(ds.min_text_chars >= 0, "dataset.min_text_chars", ds.min_text_chars, "must be >= 0")

    c.require(cfg.deepspeed.zero_stage in (0, 1, 2, 3), "deepspeed.zero_stage",
              cfg.deepspeed.zero_stage, "must be one of 0, 1, 2, 3")
    c.choice("deepspeed.precision", cfg.deepspeed.precision, PRECISIONS)
    c.choice("logger.wandb_mode", cfg.logger.wandb_mode, WANDB_MODES)
    c.require(cfg.threads >= 0, "threads", cfg.threads, "must be >= 0 (0: chosen at start-up)")
    c.require(cfg.launcher.nproc_per_node >= 1, "launcher.nproc_per_node",
              cfg.launcher.nproc_per_node, "must be >= 1")
    c.require(cfg.launcher.nnodes >= 1, "launcher.nnodes", cfg.launcher.nnodes, "must be >= 1")
    c.choice("launcher.backend", cfg.launcher.backend, LAUNCHER_BACKENDS)
    # One `red train` starts every node's ranks only through DeepSpeed's runner (pdsh over a
    # hostfile); torchrun would start this node's ranks alone.
    c.require(cfg.launcher.nnodes == 1
              or (cfg.launcher.backend == "deepspeed" and bool(cfg.launcher.hostfile)),
              "launcher.nnodes", cfg.launcher.nnodes,
              "several nodes need launcher.backend=deepspeed and launcher.hostfile "
              "(README: Several nodes)")
    c.choice("device", cfg.device, DEVICES)
    c.require(cfg.checkpoint_every >= 1, "checkpoint_every", cfg.checkpoint_every, "must be >= 1")
    c.require(cfg.sample_every >= 1, "sample_every", cfg.sample_every, "must be >= 1")
    if any(is_toy(cfg[g].path) for g in ("policy", "reward_model", "cost_model", "dataset")):
        from red_cli.toy.build import as_toy_config, check_settings

        c.errors += check_settings(as_toy_config(cfg.toy))
    c.raise_if_any()


def _check_lagrangian(c: Collector, lag: Any) -> None:
    key = "ppo.lagrangian."
    c.require(lag.lambda_init >= 0, key + "lambda_init", lag.lambda_init,
              "must be >= 0 (0: lambda held at 0, the unconstrained control)")
    c.require(lag.lambda_lr >= 0, key + "lambda_lr", lag.lambda_lr, "must be >= 0")
    c.require(lag.lambda_max is None or (lag.lambda_max > 0 and lag.lambda_max >= lag.lambda_init),
              key + "lambda_max", lag.lambda_max,
              f"must be null or > 0 and >= ppo.lagrangian.lambda_init ({lag.lambda_init})")
    c.require(lag.update_delay >= 0, key + "update_delay", lag.update_delay, "must be >= 0")
    c.require(lag.cost_window >= 1, key + "cost_window", lag.cost_window, "must be >= 1")


def _check_missing(c: Collector, cfg: Any) -> None:
    from omegaconf import OmegaConf

    for key in sorted(OmegaConf.missing_keys(cfg)):
        c.errors.append(f"{key}: required, give {key}=...")


def _check_sampling(c: Collector, cfg: Any) -> None:
    s = cfg.sampling
    for key, ok, allowed in (("max_new_tokens", lambda v: v >= 1, "must be >= 1"),
                             ("temperature", lambda v: v > 0, "must be > 0"),
                             ("top_k", lambda v: v >= 0, "must be >= 0"),
                             ("top_p", lambda v: 0 < v <= 1, "must be in (0, 1]")):
        if s[key] is not None:
            c.require(ok(s[key]), f"sampling.{key}", s[key], allowed)
    mpl = cfg.prompts.max_prompt_length
    c.require(mpl is None or mpl >= 1, "prompts.max_prompt_length", mpl, "must be >= 1 or null")
    c.choice("device", cfg.device, DEVICES)
    _check_generation(c, cfg.generation)


def validate_eval(cfg: Any) -> None:
    import math

    c = Collector()
    _check_missing(c, cfg)
    _check_sampling(c, cfg)
    c.require(cfg.prompts.n >= 1, "prompts.n", cfg.prompts.n, "must be >= 1")
    c.require(cfg.batch_size >= 1, "batch_size", cfg.batch_size, "must be >= 1")
    c.require(cfg.tie_margin >= 0, "tie_margin", cfg.tie_margin, "must be >= 0")
    c.require(cfg.bootstrap_samples >= 1, "bootstrap_samples", cfg.bootstrap_samples, "must be >= 1")
    c.require(0 < cfg.confidence < 1, "confidence", cfg.confidence, "must be in (0, 1)")
    c.require(cfg.cost_limit is None or math.isfinite(cfg.cost_limit), "cost_limit",
              cfg.cost_limit, "must be a finite number or null")
    j = cfg.judge
    if j.kind == "llm":
        c.require(j.base_url.startswith(("http://", "https://")), "judge.base_url", j.base_url,
                  "must start with http:// or https://")
        c.require(j.concurrency >= 1, "judge.concurrency", j.concurrency, "must be >= 1")
        c.require(j.max_retries >= 0, "judge.max_retries", j.max_retries, "must be >= 0")
        c.require(j.backoff_s >= 0, "judge.backoff_s", j.backoff_s, "must be >= 0")
        c.require(j.timeout_s > 0, "judge.timeout_s", j.timeout_s, "must be > 0")
        c.require(j.max_tokens >= 1, "judge.max_tokens", j.max_tokens, "must be >= 1")
        for field in ("{prompt}", "{response_a}", "{response_b}"):
            c.require(field in j.user_template, "judge.user_template", "...",
                      f"must contain {field}")
    c.raise_if_any()


# The shaded bands `red report` can draw around each group's mean curve.
REPORT_BANDS = ("se2", "minmax", "none")


def validate_report(cfg: Any) -> None:
    c = Collector()
    _check_missing(c, cfg)
    c.raise_if_any()
    c.require(len(cfg.runs) >= 1, "runs", list(cfg.runs), "name at least one directory")
    c.require(cfg.final_window >= 1, "final_window", cfg.final_window, "must be >= 1")
    c.require(cfg.smooth >= 1, "smooth", cfg.smooth, "must be >= 1")
    c.choice("band", cfg.band, REPORT_BANDS)
    c.raise_if_any()


def validate_explain(cfg: Any) -> None:
    c = Collector()
    _check_missing(c, cfg)
    _check_sampling(c, cfg)
    c.require(cfg.n_samples >= 1, "n_samples", cfg.n_samples, "must be >= 1")
    c.require(len(cfg.modes) >= 1, "modes", list(cfg.modes), "name at least one mode")
    for mode in cfg.modes:
        c.choice("modes", mode, tuple(mode_registry()))
    c.raise_if_any()
