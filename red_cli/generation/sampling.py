"""Next-token sampling as transformers' `generate` does it, for backends with their own loop.

`generate(do_sample=True, temperature=t, top_k=k, top_p=p)` turns the last position's logits
into a distribution in this order (its logits warpers): divide by the temperature, keep the k
largest (ties with the k-th kept too), keep the smallest set of most likely tokens whose
probability reaches p (at least one), softmax, one `torch.multinomial` draw. Doing the same
operations in the same order draws the same tokens from the same generator state, so a backend
that computes the same logits samples exactly what `generate` samples.
"""

from __future__ import annotations

import torch

from red_cli.generation.spec import Sampling


def filtered_scores(logits: torch.Tensor, sampling: Sampling) -> torch.Tensor:
    """[b, V] logits -> [b, V] float32 scores with filtered-out tokens at -inf.

    Temperature, then top-k (``top_k`` 0: off), then top-p (``top_p`` 1: off): transformers'
    TemperatureLogitsWarper, TopKLogitsWarper and TopPLogitsWarper with min_tokens_to_keep=1.
    """
    scores = logits.float()
    if sampling.temperature != 1.0:
        scores = scores / sampling.temperature
    if sampling.top_k:
        k = min(sampling.top_k, scores.shape[-1])
        kth = torch.topk(scores, k).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if sampling.top_p < 1.0:
        ascending, order = torch.sort(scores, descending=False)
        cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative <= 1 - sampling.top_p
        drop[..., -1:] = False  # the most likely token always stays
        scores = scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return scores


def sample_next(logits: torch.Tensor, sampling: Sampling) -> torch.Tensor:
    """One token per row, [b] long, drawn from torch's global generator as `generate` draws."""
    probs = torch.softmax(filtered_scores(logits, sampling), dim=-1)
    return torch.multinomial(probs, num_samples=1).squeeze(1)
