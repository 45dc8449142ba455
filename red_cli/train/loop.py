"""THE training loop: PPO with per-token rewards under DeepSpeed. Read it top to bottom.

Setup (``red_cli.train.setup``) builds the models (policy and critic as DeepSpeed engines;
reference and reward model frozen), the prompt stream, the reward pipeline, the mode, the
generator and the advantage estimator. Each iteration then:
  1. rollout: sample responses to this rank's prompts (the generator)
  2. forwards: old logprobs, reference logprobs, values (no grad)
  3. rewards: RM readings -> per-token rewards (the mode) -> minus kl_coef * KL (GRPO: the
     KL goes into the loss instead)
  4. advantages: the estimator (GAE with a critic; REINFORCE++, RLOO, GRPO without one);
     with a cost model the cost goes through steps 2-4 too (its own critic under GAE), and
     the policy trains on (A_r - lambda A_c) / (1 + lambda), lambda the Lagrange multiplier
     (``red_cli.rlhf.lagrangian``)
  5. PPO epochs over mini batches (gradient accumulation over micro batches)
  6. log (reduced over ranks; rank 0 writes)
  7. checkpoint every `checkpoint_every` iterations, at the end, and when asked to stop
A NaN or infinity stops the run at the iteration it appears in, before anything is saved
from it (``_stop_non_finite``). The maths lives in `red_cli/rlhf/`; this file only wires it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, NamedTuple

import torch
from omegaconf import DictConfig, OmegaConf

from red_cli import models, runs, runtime
from red_cli.errors import Interrupted, NonFinite
from red_cli.generation import Rollout, Sampling, build_generator, describe
from red_cli.reward.shaping import ScoreShaper
from red_cli.rlhf.kl import AdaptiveKLController, FixedKLController, add_kl_to_rewards, k3
from red_cli.rlhf.lagrangian import Lagrangian, combine_advantages
from red_cli.rlhf.masking import masked_mean
from red_cli.rlhf.ppo import entropy_from_logits, gather_logprobs, policy_loss, value_loss
from red_cli.runs import read_metrics
from red_cli.train import distributed, forwards
from red_cli.train.estimators import build_estimator
from red_cli.train.metrics import MetricsLogger, cost_metrics, iteration_metrics, plot_curves
from red_cli.train.samples import write_samples
from red_cli.train.setup import (
    Sizes,
    build_engines,
    build_models,
    build_prompts,
    derived_sizes,
    gold_cost_judge,
    gold_judge,
)

log = logging.getLogger("red")


def train(cfg: DictConfig, run_dir: Path, resume: bool = False,
          stop: runtime.StopRequest | None = None) -> dict:
    """Run PPO as configured; write everything under ``run_dir``; return the last metrics.

    ``stop``: asked at the end of every iteration (all ranks agree); when it says so, a
    checkpoint is written and :class:`Interrupted` raised.
    """
    # ------------------------------------------------------------------ setup
    dist = distributed.setup(cfg.device)
    sizes = derived_sizes(cfg.ppo, dist.world_size)
    p = cfg.ppo
    stop = stop or runtime.StopRequest()
    threads = runtime.choose_threads(cfg.threads, cfg.launcher.nproc_per_node)
    follow_load = (cfg.threads_follow_load and cfg.threads == 0 and dist.world_size == 1
                   and dist.device.type == "cpu")
    # Same seed everywhere for identical initial weights; sampling differs per rank below.
    distributed.seed_everything(cfg.seed)
    if dist.device.type == "cpu":
        # Exact resume needs bitwise-repeatable kernels; on CPU they cost nothing extra.
        torch.use_deterministic_algorithms(True, warn_only=True)
        # ...but not NaN-filling every fresh tensor (torch's default in that mode, a debugging
        # aid): no kernel here reads memory it has not written.
        torch.utils.deterministic.fill_uninitialized_memory = False

    estimator = build_estimator(p, dist.world_size)
    m = build_models(cfg, dist, estimator)
    stream = build_prompts(cfg, m.tokenizer, dist)
    gold = gold_judge(cfg)
    gold_cost = gold_cost_judge(cfg)
    generator = build_generator(cfg.generation, m.tokenizer,
                                Sampling(p.max_new_tokens, p.temperature, p.top_k, p.top_p,
                                         eos_token_ids=m.eos_ids), dist.device, m.policy)
    engines = build_engines(m, cfg, sizes)
    policy_engine, critic_engine = engines["policy"], engines.get("critic")
    cost_critic_engine = engines.get("cost_critic")
    kl_ctl = (AdaptiveKLController(p.kl_coef, p.kl_target, p.kl_horizon) if p.adaptive_kl
              else FixedKLController(p.kl_coef))
    shaper = ScoreShaper(p.score_norm, p.score_clip, p.missing_eos_penalty)
    # Costs are read as they are: the limit is in the cost model's units.
    cost_shaper = ScoreShaper("none", None, None)
    lag = p.lagrangian
    lagrangian = (Lagrangian(lag.cost_limit, lag.lambda_init, lag.lambda_lr, lag.lambda_max,
                             lag.cost_window, lag.update_delay) if m.cost else None)

    ckpt_root = run_dir / "checkpoints"
    start = 0
    if resume and runs.last_checkpoint_iteration(run_dir) is None:
        log.info("no checkpoint yet in %s: starting again from iteration 0", run_dir)
        resume = False
    if resume:
        state = distributed.load_checkpoint(ckpt_root, engines, dist)
        start = state["iteration"] + 1
        stream.load_state_dict(state["data"])
        kl_ctl.load_state_dict(state["kl_ctl"])
        shaper.load_state_dict(state["shaper"])
        if lagrangian is not None:
            lagrangian.load_state_dict(state["lagrangian"])
        # The count the run started with, unless one is asked for: results depend on it.
        threads = cfg.threads or state.get("threads", threads)
        log.info("resumed at iteration %d", start)
    else:
        # Ranks share weights but must not share samples.
        distributed.seed_everything(cfg.seed * 1000 + dist.rank + 1)
    if dist.device.type == "cpu":
        torch.set_num_threads(threads)
    if dist.is_main:
        log.info("run %s: %s, rm %s%s, generation %s, estimator %s%s, %d rank(s), %d prompts%s",
                 run_dir, m.mode.name, cfg.reward_model.name,
                 f", cost model {cfg.cost_model.name} (limit {lag.cost_limit:g})" if m.cost
                 else "", describe(generator, dist.device, cfg.generation.backend),
                 estimator.name,
                 f" (critic from {m.critic_init})" if m.critic is not None else "",
                 dist.world_size, len(stream.items),
                 f", {threads} thread(s)" if dist.device.type == "cpu" else "")
    logger = MetricsLogger(run_dir, OmegaConf.to_container(cfg), enabled=dist.is_main,
                           wandb_mode=cfg.logger.wandb_mode, project=cfg.logger.project,
                           entity=cfg.logger.entity, tags=list(cfg.logger.tags),
                           progress_bar=cfg.logger.progress_bar, total=p.iterations, start=start,
                           name=cfg.logger.name, group=cfg.logger.group or cfg.experiment)

    def snapshot() -> dict:
        state = {"data": stream.state_dict(), "kl_ctl": kl_ctl.state_dict(),
                 "shaper": shaper.state_dict()}
        if lagrangian is not None:
            state["lagrangian"] = lagrangian.state_dict()
        return state

    def trainer_state(iteration: int, before: dict | None = None) -> dict:
        return {"iteration": iteration, "threads": threads, **(before or snapshot())}

    load = runtime.CpuLoad() if follow_load else None
    last: dict = {}
    for iteration in range(start, p.iterations):
        t_iter = time.perf_counter()
        if load is not None:
            threads = runtime.threads_for(load.others())
            torch.set_num_threads(threads)
        # What a checkpoint of "before this iteration" needs, if a NaN makes us stop in it.
        before = snapshot()
        rng_before = distributed.rng_state()
        # -------------------------------------------------------------- 1. rollout
        t0 = time.perf_counter()
        batch = stream.next_batch()
        with distributed.gathered_for_generation(policy_engine):
            traj = generator.generate(policy_engine.module, batch.texts,
                                      batch.input_ids.to(dist.device),
                                      batch.attention_mask.to(dist.device))
        mask = traj.response_mask
        t_rollout = time.perf_counter() - t0

        # -------------------------------------------------------------- 2. forwards
        t0 = time.perf_counter()
        old_logprobs = forwards.logprobs_of(policy_engine.module, traj, p.temperature,
                                            p.micro_batch_size)
        ref_logprobs = forwards.logprobs_of(m.reference, traj, p.temperature, p.micro_batch_size)
        old_values = (forwards.values_of(critic_engine.module, traj, p.micro_batch_size)
                      if critic_engine is not None else None)
        old_cost_values = (forwards.values_of(cost_critic_engine.module, traj,
                                              p.micro_batch_size)
                           if cost_critic_engine is not None else None)
        t_forward = time.perf_counter() - t0

        # -------------------------------------------------------------- 3. rewards
        t0 = time.perf_counter()
        scored = m.pipeline(traj, shaper, dist.world_size)
        credit = m.mode.apply(scored.signals, m.knobs)
        # GRPO penalises KL in its loss instead; the KL is measured (and logged) all the same.
        kl_coef = 0.0 if estimator.kl_in_loss else kl_ctl.value
        shaped = add_kl_to_rewards(credit.rewards, old_logprobs, ref_logprobs, mask, kl_coef,
                                   p.kl_estimator)
        cost = None
        if m.cost:
            cost_scored = m.cost_pipeline(traj, cost_shaper, dist.world_size)
            cost_credit = m.mode.apply(cost_scored.signals, m.knobs)
            # The KL enters the cost with the opposite sign, so (A_r - lambda A_c) / (1 +
            # lambda) carries -kl_coef * KL whatever lambda is (safe-rlhf splits it too).
            cost = (cost_scored, cost_credit,
                    add_kl_to_rewards(cost_credit.rewards, old_logprobs, ref_logprobs, mask,
                                      -kl_coef, p.kl_estimator))
        t_score = time.perf_counter() - t0

        # -------------------------------------------------------------- 4. advantages
        advantages, returns = estimator(shaped.rewards, old_values, mask)
        cost_advantages = cost_returns = None
        if cost is not None:
            # Every rank's episode costs, in rank order: lambda moves the same on every rank.
            episode_cost = lagrangian.update(iteration, [
                c for part in runtime.gather_objects(cost[0].raw_scores.tolist(),
                                                     dist.world_size) for c in part])
            cost_advantages, cost_returns = estimator(cost[2].rewards, old_cost_values, mask)
            advantages = combine_advantages(advantages, cost_advantages, lagrangian.value)
        bad = _first_non_finite(dist, [
            ("objective/score (the reward model's output)", scored.raw_scores),
            ("rewards (the redistributed score)", credit.rewards),
            ("objective/cost (the cost model's output)", cost[0].raw_scores if cost else None),
            ("costs (the redistributed cost)", cost[1].rewards if cost else None),
            ("policy logprobs", old_logprobs), ("reference logprobs", ref_logprobs),
            ("critic values", old_values), ("cost critic values", old_cost_values),
            ("cost advantages", cost_advantages), ("advantages", advantages)], mask)
        if bad:
            # Nothing was trained on it yet: the weights are still those of the last
            # iteration, so they are saved as its checkpoint (if it has none) to resume from,
            # unless they hold a NaN themselves (a critic copied from a broken reward model).
            if runs.last_checkpoint_iteration(run_dir) != iteration - 1 \
                    and not distributed.non_finite_weights(engines, dist):
                distributed.save_checkpoint(ckpt_root, iteration - 1, engines,
                                            trainer_state(iteration - 1, before), dist,
                                            rng=rng_before)
            _stop_non_finite(bad, iteration, run_dir, updated=False)

        # -------------------------------------------------------------- 5. PPO epochs
        t0 = time.perf_counter()
        critics = [track for track in (
            ValueTrack("critic", critic_engine, old_values, returns, "ppo/loss/value",
                       "ppo/val/clipfrac"),
            ValueTrack("cost critic", cost_critic_engine, old_cost_values, cost_returns,
                       "ppo/loss/cost_value", "ppo/cost_val/clipfrac")) if track.engine]
        stats = _ppo_epochs(policy_engine, critics, traj, old_logprobs, advantages, cfg, sizes,
                            dist,
                            kl_loss=(ref_logprobs, kl_ctl.value) if estimator.kl_in_loss else None)
        if isinstance(stats, str):
            _stop_non_finite(stats, iteration, run_dir, updated=True)
        t_update = time.perf_counter() - t0

        # -------------------------------------------------------------- 6. log
        values = {**iteration_metrics(scored, credit, shaped, returns, old_values, kl_ctl.value),
                  **stats, "ppo/lr": policy_engine.get_lr()[0],
                  "time/rollout": t_rollout, "time/forward": t_forward, "time/score": t_score,
                  "time/update": t_update}
        if scored.signals.prompt_scores is not None:
            values["rewards/prompt_score"] = scored.signals.prompt_scores.mean().item()
        # What the toy world's gold judges read: prompt + response.
        texts = [q + r for q, r in zip(traj.prompts, traj.responses)]
        gold_scores = gold_costs = None
        if gold is not None:
            gold_scores = torch.tensor(gold(texts))
            values["objective/gold"] = gold_scores.mean().item()
        if cost is not None:
            values.update(cost_metrics(cost, cost_returns, old_cost_values, lagrangian.value,
                                       episode_cost))
            if gold_cost is not None:
                gold_costs = torch.tensor(gold_cost(texts))
                values["objective/gold_cost"] = gold_costs.mean().item()
        values = runtime.all_reduce_mean(values, dist.world_size)
        n_tokens = (mask.sum() + traj.query_mask.sum()).item() * dist.world_size
        values["time/iteration"] = time.perf_counter() - t_iter
        if load is not None:
            values["system/threads"] = threads
        values["throughput/tokens_per_s"] = n_tokens / values["time/iteration"]
        kl_ctl.update(values["objective/kl"], p.rollout_batch_size)
        logger.log(iteration, values)
        last = values
        if (iteration + 1) % cfg.sample_every == 0 or iteration + 1 == p.iterations:
            write_samples(run_dir, iteration, traj, scored, credit, shaped.rewards, gold_scores,
                          m.tokenizer, dist,
                          costs=None if cost is None else (cost[0], cost[1], gold_costs))

        # -------------------------------------------------------------- 7. checkpoint
        stopping = runtime.any_rank(stop(), dist.world_size) and iteration + 1 < p.iterations
        if (iteration + 1) % cfg.checkpoint_every == 0 or iteration + 1 == p.iterations \
                or stopping:
            broken = distributed.non_finite_weights(engines, dist)
            if broken:
                _stop_non_finite(f"the {broken} weights", iteration, run_dir, updated=True)
            distributed.save_checkpoint(ckpt_root, iteration, engines, trainer_state(iteration),
                                        dist)
        if stopping:
            logger.close()
            raise Interrupted(f"interrupted after iteration {iteration} "
                              f"({iteration + 1} of {p.iterations} done, checkpoint written)")

    # ------------------------------------------------------------------ finish
    logger.close()
    in_sync = distributed.check_ranks_in_sync(engines, dist)
    pol = cfg.policy
    distributed.save_final_policy(policy_engine, m.tokenizer, ckpt_root, dist,
                                  lambda: models.load_policy(m.policy_path, pol.dtype,
                                                             pol.trust_remote_code))
    if dist.is_main:
        (run_dir / "rank_checksums.json").write_text(json.dumps(in_sync, indent=1) + "\n")
        plot_curves(read_metrics(run_dir / "metrics.jsonl"), run_dir / "plots" / "curves.png",
                    title=f"{m.mode.name} / {cfg.reward_model.name} / seed {cfg.seed}")
    runtime.barrier(dist.world_size)
    return last


def _first_non_finite(dist, named: list, mask: torch.Tensor) -> str | None:
    """The name of the first quantity holding a NaN or infinity on any rank (on real response
    tokens for per-token ones), or None."""
    found = None
    for name, x in named:
        if x is None:
            continue
        values = x[mask] if x.shape == mask.shape else x
        if not bool(torch.isfinite(values).all()):
            found = name
            break
    # Every rank stops at the same point, or the others would wait in a collective forever.
    names = runtime.gather_objects(found, dist.world_size)
    return next((n for n in names if n), None)


def _stop_non_finite(what: str, iteration: int, run_dir: Path, updated: bool) -> None:
    last = runs.last_checkpoint_iteration(run_dir)
    where = ("checkpoint of iteration " + str(last) if last is not None and last >= 0
             else "checkpoint of the starting weights" if last is not None
             else "start (no checkpoint: resuming starts again from iteration 0)")
    raise NonFinite(
        f"{what} is not finite (NaN or inf) at iteration {iteration}; "
        + ("the update went no further and " if updated else "nothing was trained on it; ")
        + f"the last good state is the {where} (checkpoints/latest). Fix the cause (a reward "
        "model in a lower precision, a learning rate too high), then continue with "
        f"red train resume={run_dir}")


class ValueTrack(NamedTuple):
    """A critic trained beside the policy: what to call it, its engine, its old values and
    regression targets [b, T], and the names of its loss and clip-fraction metrics."""

    name: str
    engine: Any
    old_values: torch.Tensor
    returns: torch.Tensor
    loss_metric: str
    clipfrac_metric: str


def _ppo_epochs(policy_engine, critics: list[ValueTrack], traj: Rollout, old_logprobs,
                advantages, cfg: DictConfig, sizes: Sizes, dist=None,
                kl_loss: tuple | None = None) -> dict[str, float] | str:
    """PPO epochs over shuffled mini batches; DeepSpeed accumulates micro-batch gradients.
    Each critic in ``critics`` (none without one; the reward's, then the cost's) takes its
    step after the policy's on the same micro batch. ``kl_loss``: (reference logprobs
    [b, T], coefficient) to add ``coefficient * mean k3`` to the policy's loss (GRPO),
    token-averaged like the clipped objective.

    Returns the mean of each loss statistic, or the name of the first loss or gradient norm
    that is not finite (every rank stops at the same micro batch)."""
    world = dist.world_size if dist is not None else 1
    p = cfg.ppo
    sums: dict[str, float] = {}
    count = 0
    n = len(traj.prompts)
    policy_engine.train()
    for critic in critics:
        critic.engine.train()
    for _epoch in range(p.ppo_epochs):
        order = torch.randperm(n, device=old_logprobs.device)
        for mb_start in range(0, n, sizes.mini_per_rank):
            mini = order[mb_start:mb_start + sizes.mini_per_rank]
            for mc_start in range(0, len(mini), p.micro_batch_size):
                idx = mini[mc_start:mc_start + p.micro_batch_size]
                # Columns that are padding in every row of this micro batch cost compute and
                # change nothing: dropped (docs/PERFORMANCE.md). Models that pack rows skip
                # the rest of the padding too (forwards.packs_rows).
                part = traj.select(idx).without_padding()
                mask = part.response_mask
                T = mask.shape[1]

                # [n, V]: the real response tokens only.
                logits = forwards.response_logits(policy_engine, part, p.temperature)
                logprobs = forwards.per_token(
                    gather_logprobs(logits, part.response_ids[mask]), mask)
                pl = policy_loss(logprobs, old_logprobs[idx, :T], advantages[idx, :T], mask,
                                 p.cliprange)
                # Entropy keeps its graph only when it is part of the loss.
                entropy = masked_mean(forwards.per_token(
                    entropy_from_logits(logits if p.ent_coef > 0 else logits.detach()), mask),
                    mask)
                loss = pl.loss - p.ent_coef * entropy if p.ent_coef > 0 else pl.loss
                kl_term = None
                if kl_loss is not None:
                    ref, coef = kl_loss
                    kl_term = masked_mean(k3(logprobs, ref[idx, :T]), mask)
                    loss = loss + coef * kl_term
                if runtime.any_rank(not bool(torch.isfinite(loss)), world):
                    return "ppo/loss/policy"
                policy_engine.backward(loss)
                policy_engine.step()
                if not _finite_norm(policy_engine, world):
                    return "the policy's gradient norm"
                step = {"ppo/loss/policy": pl.loss.item()}

                clipfracs = {}
                for critic in critics:
                    values = forwards.response_values(critic.engine, part)
                    vl = value_loss(values, critic.old_values[idx, :T], critic.returns[idx, :T],
                                    mask, p.cliprange_value)
                    if runtime.any_rank(not bool(torch.isfinite(vl.loss)), world):
                        return critic.loss_metric
                    critic.engine.backward(p.vf_coef * vl.loss)
                    critic.engine.step()
                    if not _finite_norm(critic.engine, world):
                        return f"the {critic.name}'s gradient norm"
                    step[critic.loss_metric] = vl.loss.item()
                    clipfracs[critic.clipfrac_metric] = vl.clipfrac.item()
                step.update({"ppo/policy/clipfrac": pl.clipfrac.item(),
                             "ppo/policy/approx_kl": pl.approx_kl.item(),
                             "ppo/policy/entropy": entropy.item()})
                if kl_term is not None:
                    step["ppo/policy/kl_loss"] = kl_term.item()
                step.update(clipfracs)
                for k, v in step.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
    return {k: v / count for k, v in sums.items()}


def _finite_norm(engine, world: int) -> bool:
    """Whether the gradient norm of the last optimiser step is finite, where DeepSpeed
    measures one (its ZeRO optimisers; under ZeRO-0 with a torch optimiser it does not, and
    the weights are checked before every checkpoint instead)."""
    norm = engine.get_global_grad_norm()
    bad = norm is not None and not math.isfinite(float(norm))
    return not runtime.any_rank(bad, world)
