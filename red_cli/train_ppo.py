"""THE training loop: PPO with per-token rewards under DeepSpeed. Read it top to bottom.

Setup builds four models (policy and critic as DeepSpeed engines; reference and reward model
frozen), the prompt stream and the reward pipeline. Each iteration then:
  1. rollout: sample responses to this rank's prompts
  2. forwards: old logprobs, reference logprobs, values (no grad)
  3. rewards: RM score -> shaped score -> per-token rewards (mode) -> minus kl_coef * KL
  4. advantages: GAE, whitened
  5. PPO epochs over mini batches (gradient accumulation over micro batches)
  6. log (reduced over ranks; rank 0 writes)
  7. checkpoint every `checkpoint_every` iterations and at the end
The maths lives in `red_cli/rlhf/`; this file only wires it.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from red_cli import distributed, models
from red_cli import rollout as ro
from red_cli.adapters import options_from
from red_cli.checks import derived_sizes
from red_cli.data import PromptStream, load_prompts
from red_cli.metrics import MetricsLogger, plot_curves, read_metrics
from red_cli.rewards import RewardPipeline, ScoreShaper
from red_cli.rlhf.gae import compute_gae, dense_reward_gamma_warning
from red_cli.rlhf.kl import AdaptiveKLController, FixedKLController, add_kl_to_rewards
from red_cli.rlhf.masking import masked_mean, masked_whiten
from red_cli.rlhf.ppo import entropy_from_logits, gather_logprobs, policy_loss, value_loss
from red_cli.samples import write_samples

log = logging.getLogger("red")


def train(cfg: DictConfig, run_dir: Path, resume: bool = False) -> dict:
    """Run PPO as configured; write everything under ``run_dir``; return the last metrics."""
    # ------------------------------------------------------------------ setup
    dist = distributed.setup(cfg.device)
    sizes = derived_sizes(cfg.ppo, dist.world_size)
    p = cfg.ppo
    # Same seed everywhere for identical initial weights; sampling differs per rank below.
    distributed.seed_everything(cfg.seed)
    if dist.device.type == "cpu":
        # Exact resume needs bitwise-repeatable kernels; on CPU they cost nothing extra.
        torch.use_deterministic_algorithms(True, warn_only=True)
        # ...but not NaN-filling every fresh tensor (torch's default in that mode, a debugging
        # aid): no kernel here reads memory it has not written.
        torch.utils.deterministic.fill_uninitialized_memory = False

    policy_path = models.resolve_path(cfg.policy.path, cfg.toy)
    rm_path = models.resolve_path(cfg.reward_model.path, cfg.toy)
    tokenizer = models.load_tokenizer(models.resolve_path(cfg.policy.tokenizer or policy_path, cfg.toy),
                                      cfg.policy.trust_remote_code)
    policy = models.load_policy(policy_path, cfg.policy.dtype, cfg.policy.trust_remote_code,
                                cfg.policy.gradient_checkpointing)
    rm_tokenizer = models.load_tokenizer(models.resolve_path(cfg.reward_model.tokenizer or rm_path, cfg.toy),
                                         cfg.reward_model.trust_remote_code, key="reward_model.path")
    reward_model = models.load_reward_model(rm_path, cfg.reward_model.dtype,
                                            cfg.reward_model.trust_remote_code,
                                            label_weights=cfg.reward_model.label_weights)
    rewards = RewardPipeline(cfg.redistribution, cfg.reward_model, reward_model, rm_tokenizer, tokenizer)
    critic, critic_init = models.build_critic(p.critic_init, reward_model, policy,
                                              rewards.rm_is_causal, rewards.same_tokenizer,
                                              cfg.policy.gradient_checkpointing)
    lora = cfg.policy.lora
    if lora.r > 0:
        # After the critic is built: it copies the plain policy, not the adapters.
        policy = models.add_lora(policy, lora.r, lora.alpha, lora.dropout, lora.target_modules)
        if lora.critic:
            models.add_critic_lora(critic, lora.r, lora.alpha, lora.dropout, lora.target_modules)
    # Made before the engines exist: under ZeRO-3 a copy made later would copy partitions.
    reference = models.reference_from(policy)
    for module in (reference, reward_model):
        module.to(dist.device)
    warning = dense_reward_gamma_warning(cfg.redistribution.mode, p.gamma)
    if warning and dist.is_main:
        log.warning(warning)

    prompts = load_prompts(cfg.dataset.path, cfg.dataset.split, cfg.dataset.prompt_column,
                           toy_cfg=cfg.toy, max_prompts=cfg.dataset.max_prompts,
                           adapter=cfg.dataset.adapter, options=options_from(cfg.dataset),
                           data_dir=cfg.dataset.data_dir)
    stream = PromptStream(prompts, tokenizer, global_batch=p.rollout_batch_size, rank=dist.rank,
                          world_size=dist.world_size, seed=cfg.seed,
                          max_prompt_length=cfg.dataset.max_prompt_length,
                          use_chat_template=cfg.policy.use_chat_template)
    gold = _gold_judge(cfg)

    optimizer_steps = p.iterations * p.ppo_epochs * sizes.mini_batches_per_epoch
    engine_args = dict(scheduler=p.lr_scheduler, betas=p.adam_betas, total_steps=optimizer_steps,
                       warmup_steps=p.warmup_iterations * p.ppo_epochs * sizes.mini_batches_per_epoch,
                       config=distributed.ds_config(
                           micro_batch=p.micro_batch_size, grad_accum=sizes.grad_accum,
                           max_grad_norm=p.max_grad_norm, zero_stage=cfg.deepspeed.zero_stage,
                           offload_optimizer=cfg.deepspeed.offload_optimizer,
                           offload_param=cfg.deepspeed.offload_param, precision=cfg.deepspeed.precision))
    policy_engine = distributed.init_engine(policy, lr=p.learning_rate, weight_decay=p.weight_decay,
                                            **engine_args)
    critic_engine = distributed.init_engine(critic, lr=p.critic_learning_rate,
                                            weight_decay=p.critic_weight_decay, **engine_args)
    engines = {"policy": policy_engine, "critic": critic_engine}
    kl_ctl = (AdaptiveKLController(p.kl_coef, p.kl_target, p.kl_horizon) if p.adaptive_kl
              else FixedKLController(p.kl_coef))
    shaper = ScoreShaper(p.score_norm, p.score_clip, p.missing_eos_penalty)

    ckpt_root = run_dir / "checkpoints"
    start = 0
    if resume:
        state = distributed.load_checkpoint(ckpt_root, engines, dist)
        start = state["iteration"] + 1
        stream.load_state_dict(state["data"])
        kl_ctl.load_state_dict(state["kl_ctl"])
        shaper.load_state_dict(state["shaper"])
        log.info("resumed at iteration %d", start)
    else:
        # Ranks share weights but must not share samples.
        distributed.seed_everything(cfg.seed * 1000 + dist.rank + 1)
    logger = MetricsLogger(run_dir, OmegaConf.to_container(cfg), enabled=dist.is_main,
                           wandb_mode=cfg.logger.wandb_mode, project=cfg.logger.project,
                           entity=cfg.logger.entity, tags=list(cfg.logger.tags),
                           progress_bar=cfg.logger.progress_bar, total=p.iterations, start=start,
                           group=cfg.experiment)
    if dist.is_main:
        log.info("run %s: %s, rm %s, critic from %s, %d rank(s), %d prompts", run_dir,
                 cfg.redistribution.mode, cfg.reward_model.name, critic_init, dist.world_size,
                 len(stream.items))

    last: dict = {}
    for iteration in range(start, p.iterations):
        t_iter = time.perf_counter()
        # -------------------------------------------------------------- 1. rollout
        t0 = time.perf_counter()
        batch = stream.next_batch()
        with distributed.gathered_for_generation(policy_engine):
            traj = ro.generate(policy_engine.module, tokenizer, batch.texts,
                               batch.input_ids.to(dist.device), batch.attention_mask.to(dist.device),
                               max_new_tokens=p.max_new_tokens, temperature=p.temperature,
                               top_k=p.top_k, top_p=p.top_p)
        mask = traj.response_mask
        t_rollout = time.perf_counter() - t0

        # -------------------------------------------------------------- 2. forwards
        t0 = time.perf_counter()
        old_logprobs, _ = ro.logprobs_of(policy_engine.module, traj, p.temperature, p.micro_batch_size)
        ref_logprobs, _ = ro.logprobs_of(reference, traj, p.temperature, p.micro_batch_size)
        old_values = ro.values_of(critic_engine.module, traj, p.micro_batch_size)
        t_forward = time.perf_counter() - t0

        # -------------------------------------------------------------- 3. rewards
        t0 = time.perf_counter()
        scored = rewards(traj, shaper, dist.world_size)
        shaped = add_kl_to_rewards(scored.rewards, old_logprobs, ref_logprobs, mask, kl_ctl.value,
                                   p.kl_estimator)
        t_score = time.perf_counter() - t0

        # -------------------------------------------------------------- 4. advantages
        advantages, returns = compute_gae(shaped.rewards, old_values, mask, p.gamma, p.gae_lambda)
        if p.whiten_advantages:
            advantages = masked_whiten(advantages, mask)

        # -------------------------------------------------------------- 5. PPO epochs
        t0 = time.perf_counter()
        stats = _ppo_epochs(policy_engine, critic_engine, traj, old_logprobs, old_values,
                            advantages, returns, cfg, sizes)
        t_update = time.perf_counter() - t0

        # -------------------------------------------------------------- 6. log
        kl_per_seq = (shaped.kl * mask).sum(-1)
        values = {
            "objective/score": scored.raw_scores.mean().item(),
            "objective/kl": kl_per_seq.mean().item(),
            "objective/kl_coef": kl_ctl.value,
            "objective/response_length": mask.sum(-1).float().mean().item(),
            "objective/eos_fraction": scored.has_eos.float().mean().item(),
            "rewards/sum_minus_score": (scored.rewards.sum(-1) - scored.target).abs().max().item(),
            "rewards/mean_total": (shaped.rewards * mask).sum(-1).mean().item(),
            "rewards/shaped_score": scored.scores.mean().item(),
            "ppo/returns/mean": masked_mean(returns, mask).item(),
            "ppo/val/mean": masked_mean(old_values, mask).item(),
            **stats,
            "ppo/lr": policy_engine.get_lr()[0],
            "time/rollout": t_rollout, "time/forward": t_forward, "time/score": t_score,
            "time/update": t_update,
        }
        if scored.prompt_scores is not None:
            values["rewards/prompt_score"] = scored.prompt_scores.mean().item()
        if gold is not None:
            gold_scores = torch.tensor(gold([q + r for q, r in zip(traj.prompts, traj.responses)]))
            values["objective/gold"] = gold_scores.mean().item()
        values = distributed.all_reduce_mean(values, dist.world_size)
        n_tokens = (mask.sum() + traj.query_mask.sum()).item() * dist.world_size
        values["time/iteration"] = time.perf_counter() - t_iter
        values["throughput/tokens_per_s"] = n_tokens / values["time/iteration"]
        kl_ctl.update(values["objective/kl"], p.rollout_batch_size)
        logger.log(iteration, values)
        last = values
        if (iteration + 1) % cfg.sample_every == 0 or iteration + 1 == p.iterations:
            write_samples(run_dir, iteration, traj, scored, shaped.rewards,
                          gold_scores if gold is not None else None, tokenizer, dist)

        # -------------------------------------------------------------- 7. checkpoint
        if (iteration + 1) % cfg.checkpoint_every == 0 or iteration + 1 == p.iterations:
            distributed.save_checkpoint(ckpt_root, iteration, engines, {
                "iteration": iteration, "data": stream.state_dict(),
                "kl_ctl": kl_ctl.state_dict(), "shaper": shaper.state_dict(),
            }, dist)

    # ------------------------------------------------------------------ finish
    logger.close()
    in_sync = distributed.check_ranks_in_sync(engines, dist)
    _save_final_policy(policy_engine, tokenizer, run_dir / "checkpoints", dist,
                       lambda: models.load_policy(policy_path, cfg.policy.dtype,
                                                  cfg.policy.trust_remote_code))
    if dist.is_main:
        (run_dir / "rank_checksums.json").write_text(json.dumps(in_sync, indent=1) + "\n")
        plot_curves(read_metrics(run_dir / "metrics.jsonl"), run_dir / "plots" / "curves.png",
                    title=f"{cfg.redistribution.mode} / {cfg.reward_model.name} / seed {cfg.seed}")
    distributed.barrier(dist.world_size)
    return last


def _ppo_epochs(policy_engine, critic_engine, traj: ro.Rollout, old_logprobs, old_values,
                advantages, returns, cfg, sizes) -> dict[str, float]:
    """PPO epochs over shuffled mini batches; DeepSpeed accumulates micro-batch gradients."""
    p = cfg.ppo
    sums: dict[str, float] = {}
    count = 0
    n = len(traj.prompts)
    policy_engine.train()
    critic_engine.train()
    for _epoch in range(p.ppo_epochs):
        order = torch.randperm(n, device=old_logprobs.device)
        for mb_start in range(0, n, sizes.mini_per_rank):
            mini = order[mb_start:mb_start + sizes.mini_per_rank]
            for mc_start in range(0, len(mini), p.micro_batch_size):
                idx = mini[mc_start:mc_start + p.micro_batch_size]
                # Columns that are padding in every row of this micro batch cost compute and
                # change nothing: dropped (docs/PERFORMANCE.md).
                part = traj.select(idx).without_padding()
                mask = part.response_mask
                T = mask.shape[1]

                logits = ro.response_logits(policy_engine, part, p.temperature)
                logprobs = gather_logprobs(logits, part.response_ids)
                pl = policy_loss(logprobs, old_logprobs[idx, :T], advantages[idx, :T], mask,
                                 p.cliprange)
                # Entropy keeps its graph only when it is part of the loss.
                entropy = masked_mean(
                    entropy_from_logits(logits if p.ent_coef > 0 else logits.detach()), mask)
                loss = pl.loss - p.ent_coef * entropy if p.ent_coef > 0 else pl.loss
                policy_engine.backward(loss)
                policy_engine.step()

                values = ro.response_values(critic_engine, part)
                vl = value_loss(values, old_values[idx, :T], returns[idx, :T], mask,
                                p.cliprange_value)
                critic_engine.backward(p.vf_coef * vl.loss)
                critic_engine.step()

                step = {"ppo/loss/policy": pl.loss.item(), "ppo/loss/value": vl.loss.item(),
                        "ppo/policy/clipfrac": pl.clipfrac.item(),
                        "ppo/policy/approx_kl": pl.approx_kl.item(),
                        "ppo/policy/entropy": entropy.item(), "ppo/val/clipfrac": vl.clipfrac.item()}
                for k, v in step.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
    return {k: v / count for k, v in sums.items()}


def _gold_judge(cfg):
    """The toy world's VADER judge when the prompts come from it; no gold otherwise."""
    if not str(cfg.dataset.path).startswith("toy:"):
        return None
    from red_cli.toy.judge import GoldJudge

    return GoldJudge()


def _save_final_policy(engine, tokenizer, ckpt_root: Path, dist, load_start) -> None:
    """The trained policy as a plain Hugging Face folder, `final_policy` (`from_pretrained`
    loads it). With LoRA the adapters alone go to `final_adapter` too, and `final_policy` is
    the starting policy (``load_start()``, on the CPU) with them merged in."""
    lora = models.is_lora(engine.module)
    if engine.zero_optimization_stage() == 3:
        # A collective: every rank takes part, rank 0 receives the state dict (with LoRA only
        # the adapters: the frozen base is read from disk below).
        state = engine._zero3_consolidated_16bit_state_dict(exclude_frozen_parameters=lora)
    else:
        state = None
    if dist.is_main:
        path = ckpt_root / "final_policy"
        path.mkdir(parents=True, exist_ok=True)
        if lora:
            adapter = ckpt_root / "final_adapter"
            engine.module.save_pretrained(adapter, state_dict=state, safe_serialization=True)
            merged = models.merged_lora_policy(load_start(), adapter)
            merged.save_pretrained(path, safe_serialization=True)
        else:
            engine.module.save_pretrained(path, state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(path)
    distributed.barrier(dist.world_size)
