"""What the training loop is given before its first iteration: models, engines, prompts,
the reward pipeline, the mode, the generator, the estimator. Each helper takes the config
and returns plain objects; the loop in ``red_cli.train.loop`` only wires them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from red_cli import models, runs
from red_cli.data import PromptStream, load_prompts, options_from
from red_cli.errors import ConfigError
from red_cli.modes import Mode, gamma_warning, get_mode, knobs_of
from red_cli.reward.pipeline import RewardPipeline
from red_cli.reward.stack import RewardStack, load_reward_stack
from red_cli.toy import is_toy, resolve_path
from red_cli.train import distributed
from red_cli.train.estimators import Estimator

log = logging.getLogger("red")


@dataclass(frozen=True)
class Sizes:
    """Batch sizes per rank, derived once from the global sizes in ``ppo``."""

    mini_per_rank: int
    grad_accum: int  # micro batches per optimiser step on one rank
    mini_batches_per_epoch: int


def derived_sizes(ppo: Any, world_size: int) -> Sizes:
    mini_per_rank = ppo.mini_batch_size // world_size
    return Sizes(
        mini_per_rank=mini_per_rank,
        grad_accum=max(1, mini_per_rank // ppo.micro_batch_size),
        mini_batches_per_epoch=ppo.rollout_batch_size // ppo.mini_batch_size,
    )


@dataclass
class Models:
    """The models of one run, before DeepSpeed wraps the trained ones.

    policy: the trained causal LM (with LoRA: a peft model); reference: the KL anchor;
    critic: the value model, or None when the estimator needs none; critic_init: what the
    critic started from; reward: the frozen reward model; pipeline: how it is read;
    tokenizer: the policy's; policy_path: where the starting policy loads from.
    cost / cost_pipeline / cost_critic: the frozen cost model, how it is read, and the cost's
    value model (started like the reward's critic: from the cost model or the policy), all
    None without a cost model.
    """

    tokenizer: Any
    policy: nn.Module
    reference: nn.Module
    critic: nn.Module | None
    critic_init: str | None
    reward: RewardStack
    pipeline: RewardPipeline
    mode: Mode
    knobs: Any
    policy_path: str
    eos_ids: tuple[int, ...]
    cost: RewardStack | None = None
    cost_pipeline: RewardPipeline | None = None
    cost_critic: nn.Module | None = None


def build_models(cfg: Any, dist: distributed.DistInfo, estimator: Estimator) -> Models:
    """Load the policy and reward model, then derive the critic, the adapters and the reference."""
    pol = cfg.policy
    policy_path = resolve_path(pol.path, cfg.toy)
    tokenizer = models.load_tokenizer(resolve_path(pol.tokenizer or policy_path, cfg.toy),
                                      pol.trust_remote_code)
    policy = models.load_policy(policy_path, pol.dtype, pol.trust_remote_code,
                                pol.gradient_checkpointing)
    eos_ids = models.eos_token_ids(tokenizer, policy)
    reward = load_reward_stack(cfg.reward_model, cfg.toy, dist.device)
    cost = (load_reward_stack(cfg.cost_model, cfg.toy, dist.device, key="cost_model.path")
            if runs.cost_model_node(cfg) is not None else None)
    for key, path, model in (("policy.path", pol.path, policy),
                             ("reward_model.path", cfg.reward_model.path, reward.model),
                             ("cost_model.path", cfg.cost_model.path,
                              cost.model if cost else None)):
        if model is None:
            continue
        broken = models.first_non_finite_parameter(model)
        if broken:
            raise ConfigError(f"{key}={path!r}: its weights hold NaN or inf (first in "
                              f"{broken}); the file is damaged or was saved from a diverged run")
    mode = get_mode(cfg.redistribution.mode)
    pipeline = RewardPipeline(reward, tokenizer, mode.needs,
                              users=f"redistribution={mode.name}", eos_ids=eos_ids)
    cost_pipeline = (RewardPipeline(cost, tokenizer, mode.needs,
                                    users=f"redistribution={mode.name} (cost model)",
                                    eos_ids=eos_ids) if cost else None)
    critic = critic_init = cost_critic = None
    if estimator.needs_critic:
        critic, critic_init = models.build_critic(
            cfg.ppo.critic_init, reward.model, policy, pipeline.rm_is_causal,
            pipeline.same_tokenizer, pol.gradient_checkpointing)
        if cost:
            cost_critic, _ = models.build_critic(
                cfg.ppo.critic_init, cost.model, policy, cost_pipeline.rm_is_causal,
                cost_pipeline.same_tokenizer, pol.gradient_checkpointing, role="cost model")
    lora = pol.lora
    if lora.r > 0:
        # After the critics are built: they copy the plain policy, not the adapters.
        policy = models.add_lora(policy, lora.r, lora.alpha, lora.dropout, lora.target_modules)
        if lora.critic:
            for value_model in (critic, cost_critic):
                if value_model is not None:
                    models.add_critic_lora(value_model, lora.r, lora.alpha, lora.dropout,
                                           lora.target_modules)
    # Made before the engines exist: under ZeRO-3 a copy made later would copy partitions.
    reference = models.reference_from(policy).to(dist.device)
    # DeepSpeed's bf16 / fp16 casts the policy it trains; the KL anchor must compute in the
    # same type, or the KL starts away from 0 (measured: -0.0018 per response on the toy
    # task with policy.dtype=float32 deepspeed.precision=bf16). A LoRA reference is the
    # policy itself.
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.deepspeed.precision)
    if half is not None and lora.r == 0:
        reference = reference.to(dtype=half)
    warning = gamma_warning(mode, cfg.ppo.gamma)
    if warning and dist.is_main:
        log.warning(warning)
    return Models(tokenizer, policy, reference, critic, critic_init, reward, pipeline, mode,
                  knobs_of(cfg.redistribution), policy_path, eos_ids, cost, cost_pipeline,
                  cost_critic)


def build_engines(m: Models, cfg: Any, sizes: Sizes) -> dict[str, Any]:
    """DeepSpeed engines for what trains: the policy, and the critic(s) when there are any
    (the reward's, and the cost's with a cost model)."""
    p = cfg.ppo
    ds_cfg = cfg.deepspeed
    steps_per_iteration = p.ppo_epochs * sizes.mini_batches_per_epoch
    common = dict(scheduler=p.lr_scheduler, betas=p.adam_betas,
                  total_steps=p.iterations * steps_per_iteration,
                  warmup_steps=p.warmup_iterations * steps_per_iteration,
                  config=distributed.ds_config(
                      micro_batch=p.micro_batch_size, grad_accum=sizes.grad_accum,
                      max_grad_norm=p.max_grad_norm, zero_stage=ds_cfg.zero_stage,
                      offload_optimizer=ds_cfg.offload_optimizer,
                      offload_param=ds_cfg.offload_param, precision=ds_cfg.precision))
    engines = {"policy": distributed.init_engine(m.policy, lr=p.learning_rate,
                                                 weight_decay=p.weight_decay, **common)}
    for name, value_model in (("critic", m.critic), ("cost_critic", m.cost_critic)):
        if value_model is not None:
            engines[name] = distributed.init_engine(value_model, lr=p.critic_learning_rate,
                                                    weight_decay=p.critic_weight_decay, **common)
    return engines


def build_prompts(cfg: Any, tokenizer, dist: distributed.DistInfo) -> PromptStream:
    """The training prompts, read through the dataset's adapter, as this rank's stream."""
    ds = cfg.dataset
    prompts = load_prompts(ds.path, ds.split, ds.prompt_column, toy_cfg=cfg.toy,
                           max_prompts=ds.max_prompts, adapter=ds.adapter,
                           options=options_from(ds), data_dir=ds.data_dir)
    return PromptStream(prompts, tokenizer, global_batch=cfg.ppo.rollout_batch_size,
                        rank=dist.rank, world_size=dist.world_size, seed=cfg.seed,
                        max_prompt_length=ds.max_prompt_length,
                        use_chat_template=cfg.policy.use_chat_template,
                        samples_per_prompt=cfg.ppo.samples_per_prompt)


def gold_judge(cfg: Any):
    """The toy world's VADER judge when the prompts come from it; no gold otherwise."""
    if not is_toy(cfg.dataset.path):
        return None
    from red_cli.toy.judge import GoldJudge

    return GoldJudge()


def gold_cost_judge(cfg: Any):
    """The toy safety world's gold cost (hype words) when the prompts come from the toy world
    and the run has a cost model; None otherwise (so runs without one log what they did)."""
    if not (is_toy(cfg.dataset.path) and runs.cost_model_node(cfg) is not None):
        return None
    from red_cli.toy.cost import GoldCostJudge

    return GoldCostJudge()
