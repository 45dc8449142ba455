"""A rollout: prompts and the responses sampled to them, as the rest of training reads them."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Rollout:
    """One rank's share of an iteration. P: padded prompt length, T: response length."""

    prompts: list[str]
    responses: list[str]
    query_ids: torch.Tensor  # [b, P] left-padded
    query_mask: torch.Tensor  # [b, P] bool
    response_ids: torch.Tensor  # [b, T] padded after EOS
    response_mask: torch.Tensor  # [b, T] bool, True through EOS

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.query_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.query_mask, self.response_mask], dim=1)

    def without_padding(self) -> Rollout:
        """The same rows without the columns that are padding in every row.

        Prompts are left-padded and responses right-padded to the longest of the whole
        rollout; a micro batch of it usually needs fewer columns on both sides. Positions
        come from the mask, so the real tokens' logits and values do not change.
        """
        real_q = self.query_mask.any(0)
        p0 = int(real_q.int().argmax()) if bool(real_q.any()) else self.query_mask.shape[1]
        real_r = self.response_mask.any(0).nonzero()
        t1 = int(real_r.max()) + 1 if len(real_r) else 1
        return Rollout(self.prompts, self.responses, self.query_ids[:, p0:],
                       self.query_mask[:, p0:], self.response_ids[:, :t1],
                       self.response_mask[:, :t1])

    def select(self, idx: torch.Tensor) -> Rollout:
        ids = idx.tolist()
        return Rollout([self.prompts[i] for i in ids], [self.responses[i] for i in ids],
                       self.query_ids[idx], self.query_mask[idx], self.response_ids[idx],
                       self.response_mask[idx])
