"""From a rollout to per-token rewards: RM forward -> shaped score -> redistribution.

One reward-model forward reads what the chosen mode needs (the sequence score; the prefix
scores for td; the pooled token's attention row for abc), `align` expresses it on policy
response tokens, the sequence score is shaped (normalised / clipped / missing-EOS penalty,
never per token), and `rlhf.redistribution` spreads it. The KL term is added by the caller.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from red_cli import align, distributed
from red_cli.checks import ConfigError
from red_cli.rlhf.masking import first_true_index, last_true_index
from red_cli.rlhf.redistribution import get_redistributor
from red_cli.scoring import attention_row_problem, is_causal_rm, score_batch


class Scored(NamedTuple):
    """Rewards of one rank's rollout. b batch, T response length.

    raw_scores: [b] the RM's sequence score r_C as read.
    scores: [b] the shaped score the rewards are made of.
    prompt_scores: [b] R(x) on the shaped scale (td only, else None).
    rewards: [b, T] per-token rewards before KL, zero outside the response mask.
    target: [b] what ``rewards.sum(-1)`` must equal for this mode (PAPERS.md invariant 2).
    has_eos: [b] bool, the response ended with EOS.
    """

    raw_scores: torch.Tensor
    scores: torch.Tensor
    prompt_scores: torch.Tensor | None
    rewards: torch.Tensor
    target: torch.Tensor
    has_eos: torch.Tensor


class ScoreShaper:
    """One affine-then-clip map applied to every RM reading of a batch (score, prefix scores,
    R(x)), so td's differences stay differences of one potential; then the missing-EOS
    penalty on the final score only.

    norm: `none`; `batch` (mean/std of this iteration's scores over all ranks); `running`
    (mean/std of every score seen so far, Welford/Chan merge, saved in checkpoints).
    """

    def __init__(self, norm: str, clip: float | None, missing_eos_penalty: float | None):
        self.norm, self.clip, self.penalty = norm, clip, missing_eos_penalty
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def fit(self, scores: torch.Tensor, world_size: int) -> tuple[float, float]:
        """Update statistics with this batch (all ranks) and return (shift, scale)."""
        if self.norm == "none":
            return 0.0, 1.0
        gathered = torch.cat([torch.as_tensor(s) for s in
                              distributed.gather_objects(scores.detach().double().cpu(), world_size)])
        n, mean = gathered.numel(), gathered.mean().item()
        m2 = ((gathered - mean) ** 2).sum().item()
        if self.norm == "batch":
            return mean, max((m2 / max(n - 1, 1)) ** 0.5, 1e-6)
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta**2 * self.count * n / total
        self.count = total
        return self.mean, max((self.m2 / max(total - 1, 1)) ** 0.5, 1e-6)

    def transform(self, x: torch.Tensor, shift: float, scale: float) -> torch.Tensor:
        x = (x - shift) / scale
        return x.clamp(-self.clip, self.clip) if self.clip is not None else x

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict) -> None:
        self.count, self.mean, self.m2 = state["count"], state["mean"], state["m2"]


class RewardPipeline:
    """Decided once at setup: which RM inputs to build, what to read, which mode to apply."""

    def __init__(self, red_cfg: Any, rm_cfg: Any, reward_model, rm_tokenizer, policy_tokenizer):
        self.mode = red_cfg.mode
        self.red_cfg = red_cfg
        self.redistribute = get_redistributor(self.mode)
        self.model = reward_model
        self.rm_tokenizer, self.policy_tokenizer = rm_tokenizer, policy_tokenizer
        # The chat template is rendered once here, not per batch.
        self.template = (_chat_template(rm_tokenizer) if rm_cfg.use_chat_template
                         else rm_cfg.template)
        self.max_length = rm_cfg.max_length
        self.allow_prefix_passes = rm_cfg.allow_prefix_passes
        self.chunk_size = rm_cfg.prefix_chunk_size
        self.rm_is_causal = is_causal_rm(reward_model)
        self.same_tokenizer = align.same_tokenizer(policy_tokenizer, rm_tokenizer)
        self.identity = align.use_identity(policy_tokenizer, rm_tokenizer, self.template)
        if self.mode == "abc":
            problem = attention_row_problem(reward_model)
            if problem:
                raise ConfigError(
                    f"redistribution=abc cannot read this reward model's attention ({problem}); "
                    "use redistribution=td, sparse or uniform, or a reward model whose attention "
                    "goes through transformers' AttentionInterface (GPT-2, LLaMA, BERT, ...)"
                )
        if self.mode == "td" and not self.rm_is_causal and not self.allow_prefix_passes:
            raise ValueError(
                "redistribution=td needs prefix scores, and this reward model is bidirectional: "
                "set reward_model.allow_prefix_passes=true (one forward per prefix) or use a "
                "causal reward model"
            )

    def _rm_batch(self, traj) -> align.RMBatch:
        if self.identity:
            return align.identity_rm_batch(traj.query_ids, traj.query_mask, traj.response_ids,
                                           traj.response_mask)
        ids = [row[m].tolist() for row, m in zip(traj.response_ids, traj.response_mask)]
        return align.build_rm_batch(traj.prompts, traj.responses, ids, self.policy_tokenizer,
                                    self.rm_tokenizer, self.template, self.max_length)

    @torch.no_grad()
    def __call__(self, traj, shaper: ScoreShaper, world_size: int) -> Scored:
        mask = traj.response_mask
        T = mask.shape[1]
        device = traj.response_ids.device
        eos = self.policy_tokenizer.eos_token_id
        has_eos = ((traj.response_ids == eos) & mask).any(-1)

        rm_batch = _to(self._rm_batch(traj), device)
        out = score_batch(
            self.model, rm_batch.input_ids, rm_batch.attention_mask,
            positions=self.mode == "td", attention=self.mode == "abc",
            prefix_start=rm_batch.prompt_last_index.clamp(min=0),
            allow_prefix_passes=self.allow_prefix_passes, terminator_id=rm_batch.terminator_id,
            chunk_size=self.chunk_size,
        )
        on_policy = align.project_to_policy(out, rm_batch, T)
        raw = on_policy.scores.float()

        shift, scale = shaper.fit(raw, world_size)
        scores = shaper.transform(raw, shift, scale)
        penalty = torch.zeros_like(scores)
        if shaper.penalty is not None:
            penalty = torch.where(has_eos, 0.0, float(shaper.penalty))
        scores = scores - penalty

        prompt_scores = None
        if self.mode == "td":
            prompt_scores = shaper.transform(on_policy.prompt_scores.float(), shift, scale)
            prefix = shaper.transform(on_policy.prefix_scores.float(), shift, scale)
            # Responses keep at least their EOS, so no row is empty and last >= 0.
            last = last_true_index(mask)
            prefix = prefix - torch.zeros_like(prefix).scatter(1, last[:, None], penalty[:, None])
            prefix = torch.where(mask, prefix, 0.0)
            rewards = self.redistribute(prefix, prompt_scores, mask,
                                        first_token=self.red_cfg.first_token,
                                        beta_c=self.red_cfg.beta_c)
            target = _td_target(prefix, prompt_scores, mask, self.red_cfg)
        elif self.mode == "abc":
            rewards = self.redistribute(on_policy.attention.float(), scores, mask,
                                        beta=self.red_cfg.beta)
            target = scores
        else:
            rewards = self.redistribute(scores, mask)
            target = scores
        return Scored(raw, scores, prompt_scores, rewards, target, has_eos)


def _td_target(prefix: torch.Tensor, prompt_scores: torch.Tensor, mask: torch.Tensor, red) -> torch.Tensor:
    """sum_t r_t for td: beta_c * (P[last] - baseline) + (1 - beta_c) * P[last]."""
    b = torch.arange(mask.shape[0], device=mask.device)
    last = prefix[b, last_true_index(mask)]
    first = prefix[b, first_true_index(mask)]
    baseline = {"prompt_baseline": prompt_scores, "zero": first,
                "absolute": torch.zeros_like(last)}[red.first_token]
    return red.beta_c * (last - baseline) + (1 - red.beta_c) * last


def _to(rm_batch: align.RMBatch, device) -> align.RMBatch:
    for name in ("input_ids", "attention_mask", "response_mask", "prompt_last_index",
                 "to_policy", "policy_lengths"):
        setattr(rm_batch, name, getattr(rm_batch, name).to(device))
    return rm_batch


def _chat_template(tokenizer) -> str:
    """The RM's chat template rendered around placeholders, as a `{prompt}{response}` template."""
    marker_p, marker_r = "\x00PROMPT\x00", "\x00RESPONSE\x00"
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": marker_p}, {"role": "assistant", "content": marker_r}],
        tokenize=False,
    )
    text = text.replace("{", "{{").replace("}", "}}")
    return text.replace(marker_p, "{prompt}").replace(marker_r, "{response}")
