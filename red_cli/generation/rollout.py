"""A rollout: prompts and the responses sampled to them, as the rest of training reads them."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from red_cli.rlhf.masking import truncate_after_eos


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

    def packed(self) -> Packed:
        """Every row's real tokens, several rows to a packed row: padding-free forwards.

        First fit by decreasing length into rows as wide as the longest [prompt | response]
        sequence. Position ids restart at 0 with each sequence and run as in the padded row
        (``position_ids_from_mask``); transformers 5.x reads such restarts, given no attention
        mask and no cache, as sequences that must not attend to each other. A packed row ends
        with filler when nothing more fits: it comes after every real token, so none attends
        to it.
        """
        lengths = (self.query_mask.sum(1) + self.response_mask.sum(1)).tolist()
        width = max(lengths)
        free: list[int] = []  # room left in each packed row
        row, start = [0] * len(lengths), [0] * len(lengths)
        for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
            k = next((k for k, room in enumerate(free) if room >= lengths[i]), len(free))
            if k == len(free):
                free.append(width)
            row[i], start[i] = k, width - free[k]
            free[k] -= lengths[i]
        device = self.query_ids.device
        first = torch.tensor(row, device=device) * width + torch.tensor(start, device=device)
        used = width - torch.tensor(free, device=device)
        n_query = self.query_mask.sum(1)
        # Each real token's place: its row's first slot + its position in its sequence.
        rows, cols = self.attention_mask.nonzero(as_tuple=True)
        position = cols - (self.query_ids.shape[1] - n_query[rows])
        slot = first[rows] + position
        ids = self.input_ids
        # Filler: a token of the data rather than the pad id (transformers warns when a row
        # ends with it), its positions from 0 again (a sequence of its own).
        input_ids = ids[rows[0], cols[0]].repeat(len(free) * width)
        input_ids[slot] = ids[rows, cols]
        position_ids = (torch.arange(width, device=device) - used[:, None]).flatten()
        position_ids[slot] = position
        # Response token t of row i is predicted at the slot of the token before it.
        r_rows, r_cols = self.response_mask.nonzero(as_tuple=True)
        predictors = first[r_rows] + n_query[r_rows] - 1 + r_cols
        return Packed(input_ids.view(len(free), width), position_ids.view(len(free), width),
                      predictors)

    def select(self, idx: torch.Tensor) -> Rollout:
        ids = idx.tolist()
        return Rollout([self.prompts[i] for i in ids], [self.responses[i] for i in ids],
                       self.query_ids[idx], self.query_mask[idx], self.response_ids[idx],
                       self.response_mask[idx])


@dataclass
class Packed:
    """A rollout's rows packed for a padding-free forward (``Rollout.packed``).

    R packed rows of width W; n real response tokens."""

    input_ids: torch.Tensor  # [R, W]
    position_ids: torch.Tensor  # [R, W], restarting at 0 with each sequence
    predictors: torch.Tensor  # [n] long: flat index into [R * W] of the slot whose output
    # predicts each real response token, in the order of response_mask.nonzero()


def from_samples(tokenizer, prompts: list[str], query_ids: torch.Tensor,
                 query_mask: torch.Tensor, sampled: torch.Tensor, eos: list[int]) -> Rollout:
    """The rollout of sampled ids [b, t] (after the prompt): each response ends at its first EOS
    or sampled pad token (kept, so none is empty), its text decoded without special tokens."""
    pad = tokenizer.pad_token_id
    response_ids, response_mask = truncate_after_eos(sampled, eos, pad, keep_sampled_pad=True)
    responses = tokenizer.batch_decode(response_ids.masked_fill(~response_mask, pad),
                                       skip_special_tokens=True)
    return Rollout(list(prompts), responses, query_ids, query_mask, response_ids, response_mask)


@contextlib.contextmanager
def sampling_mode(model: torch.nn.Module):
    """``model`` in eval mode (no dropout) while sampling, its own mode back afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
