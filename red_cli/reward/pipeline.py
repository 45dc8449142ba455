"""From a rollout to the reward model's readings on policy tokens: RM forward -> shaped signals.

One reward-model forward reads the sequence score and what the modes in use need (prefix
scores for td, the pooled token's attention row for abc: ``red_cli.modes.spec.SIGNALS``);
``align`` expresses them on policy response tokens, and one :class:`ScoreShaper` map
(normalise / clip, then the missing-EOS penalty on the final score) puts them all on the
same scale, never per token. A mode (``red_cli.modes``) then turns these signals into
per-token rewards; the KL term is added by the caller.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import torch

from red_cli.errors import ConfigError
from red_cli.models.anatomy import is_causal_rm
from red_cli.modes.spec import ATTENTION, PREFIX_SCORES, Signals
from red_cli.reward import align
from red_cli.reward.scoring import attention_row_problem, score_batch
from red_cli.reward.shaping import ScoreShaper
from red_cli.reward.stack import RewardStack
from red_cli.rlhf.masking import last_true_index


class Scored(NamedTuple):
    """The reward model's reading of one rank's rollout. b batch.

    raw_scores: [b] the RM's sequence score r_C as read (before shaping).
    signals: the shaped readings a mode turns into rewards (``red_cli.modes.spec.Signals``).
    has_eos: [b] bool, the response ended with EOS.
    """

    raw_scores: torch.Tensor
    signals: Signals
    has_eos: torch.Tensor


class RewardPipeline:
    """Decided once at setup: which RM inputs to build and which readings to take.

    ``needs`` is the union of the signals the modes in use read (``Mode.needs``); ``users``
    names those modes for the start-up errors (``redistribution=abc``).
    """

    def __init__(self, rm: RewardStack, policy_tokenizer, needs: Iterable[str] = (),
                 users: str = "redistribution", eos_ids: Iterable[int] = ()):
        self.needs = frozenset(needs)
        # What counts as a response that ended (has_eos; the missing-EOS penalty).
        self.eos_ids = tuple(eos_ids) or (policy_tokenizer.eos_token_id,)
        self.model = rm.model
        self.rm_tokenizer, self.policy_tokenizer = rm.tokenizer, policy_tokenizer
        # The chat template is rendered once here, not per batch.
        self.template = (_chat_template(rm.tokenizer) if rm.cfg.use_chat_template
                         else rm.cfg.template)
        self.max_length = rm.cfg.max_length
        self.allow_prefix_passes = rm.cfg.allow_prefix_passes
        self.chunk_size = rm.cfg.prefix_chunk_size
        self.rm_is_causal = is_causal_rm(rm.model)
        self.same_tokenizer = align.same_tokenizer(policy_tokenizer, rm.tokenizer)
        self.identity = align.use_identity(policy_tokenizer, rm.tokenizer, self.template)
        if ATTENTION in self.needs:
            problem = attention_row_problem(rm.model)
            if problem:
                raise ConfigError(
                    f"{users} cannot read this reward model's attention ({problem}); use a mode "
                    "that does not need it (td, sparse, uniform), or a reward model whose "
                    "attention goes through transformers' AttentionInterface (GPT-2, LLaMA, BERT, ...)"
                )
        if PREFIX_SCORES in self.needs and not self.rm_is_causal and not self.allow_prefix_passes:
            raise ConfigError(
                f"{users} needs prefix scores, and this reward model is bidirectional: "
                "set reward_model.allow_prefix_passes=true (one forward per prefix) or use a "
                "causal reward model"
            )

    def _rm_batch(self, traj) -> align.RMBatch:
        if self.identity:
            pad = self.policy_tokenizer.pad_token_id
            return align.identity_rm_batch(traj.query_ids, traj.query_mask, traj.response_ids,
                                           traj.response_mask,
                                           unread_id=None if pad in self.eos_ids else pad)
        ids = [row[m].tolist() for row, m in zip(traj.response_ids, traj.response_mask)]
        return align.build_rm_batch(traj.prompts, traj.responses, ids, self.policy_tokenizer,
                                    self.rm_tokenizer, self.template, self.max_length)

    @torch.no_grad()
    def __call__(self, traj, shaper: ScoreShaper, world_size: int) -> Scored:
        mask = traj.response_mask
        T = mask.shape[1]
        device = traj.response_ids.device
        eos = torch.tensor(self.eos_ids, device=device)
        has_eos = (torch.isin(traj.response_ids, eos) & mask).any(-1)

        rm_batch = _to(self._rm_batch(traj), device)
        out = score_batch(
            self.model, rm_batch.input_ids, rm_batch.attention_mask,
            positions=PREFIX_SCORES in self.needs, attention=ATTENTION in self.needs,
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

        prompt_scores = prefix = None
        if PREFIX_SCORES in self.needs:
            prompt_scores = shaper.transform(on_policy.prompt_scores.float(), shift, scale)
            prefix = shaper.transform(on_policy.prefix_scores.float(), shift, scale)
            # The penalty lands on the last prefix score too, so the prefix path ends at the
            # penalised sequence score.
            last = last_true_index(mask)
            prefix = prefix - torch.zeros_like(prefix).scatter(1, last.clamp(min=0)[:, None],
                                                               penalty[:, None])
            prefix = torch.where(mask, prefix, 0.0)
        attention = on_policy.attention.float() if ATTENTION in self.needs else None
        return Scored(raw, Signals(scores, mask, prompt_scores, prefix, attention), has_eos)


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
