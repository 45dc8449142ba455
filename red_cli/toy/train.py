"""Training loops of the toy build: the SFT language model, sampling, Bradley-Terry RMs,
the cost model's regression.

Everything here takes flat arguments and plain token-id lists; `build.py` decides what to
train on. Batches are drawn with a seeded `torch.Generator` in one process, so the same
settings give the same weights on the same machine.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@contextlib.contextmanager
def quiet_deterministic_torch(num_threads: int) -> Iterator[None]:
    """Fixed thread count, deterministic kernels, quiet transformers; all restored after.

    One thread by default: these models are so small that a second OpenMP thread buys
    little, and on a shared machine it can stall every op at a barrier (measured: 10x
    slower). The build uses a second process instead (see `parallel.py`).
    """
    from transformers.utils import logging as hf_logging

    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    torch.set_num_threads(num_threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists -> (input_ids [b, L], attention_mask [b, L])."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def _schedule(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to 10% of the peak learning rate."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


class _Batches:
    """Seeded random batches of `size` indices with little padding: each epoch is a random
    permutation, cut into windows of 32 batches, each window sorted by length, cut into
    batches, and those batches shuffled."""

    def __init__(self, lengths: Sequence[int], size: int, generator: torch.Generator):
        self.lengths, self.size, self.generator = lengths, min(size, len(lengths)), generator
        self.queue: list[list[int]] = []

    def _refill(self) -> None:
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        window = 32 * self.size
        batches = []
        for start in range(0, len(order) - self.size + 1, window):
            chunk = sorted(order[start : start + window], key=lambda i: self.lengths[i])
            batches += [chunk[i : i + self.size]
                        for i in range(0, len(chunk) - self.size + 1, self.size)]
        perm = torch.randperm(len(batches), generator=self.generator).tolist()
        self.queue = [batches[i] for i in perm]

    def next(self) -> list[int]:
        if not self.queue:
            self._refill()
        return self.queue.pop()


def _optimizer(model: torch.nn.Module, lr: float, warmup: int, steps: int):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01,
                            fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(warmup, steps))
    return opt, sched


def train_lm(model, seqs: Sequence[Sequence[int]], pad_id: int, steps: int, batch_size: int,
             lr: float, warmup: int, seed: int, on_step: Callable[[float], None]) -> float:
    """Next-token cross-entropy on `seqs` (each bos + text + eos). Returns the mean loss of
    the last 10% of steps."""
    model.train()
    opt, sched = _optimizer(model, lr, warmup, steps)
    batches = _Batches([len(s) for s in seqs], batch_size, torch.Generator().manual_seed(seed))
    losses = []
    for _ in range(steps):
        ids, mask = pad_batch([seqs[i] for i in batches.next()], pad_id)
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss
        losses.append(_optimizer_step(model, loss, opt, sched))
        on_step(losses[-1])
    model.eval()
    return _tail_mean(losses)



def _optimizer_step(model, loss: torch.Tensor, opt, sched) -> float:
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def _tail_mean(losses: list[float]) -> float:
    """Mean loss over the last tenth of training: the number the summary reports."""
    tail = losses[-max(1, len(losses) // 10) :]
    return sum(tail) / len(tail)

@torch.no_grad()
def perplexity(model, seqs: Sequence[Sequence[int]], pad_id: int, batch_size: int = 256) -> float:
    """exp(mean next-token NLL) over every predicted token (text and eos)."""
    total, count = 0.0, 0
    for start in range(0, len(seqs), batch_size):
        ids, mask = pad_batch(seqs[start : start + batch_size], pad_id)
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1]
        targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                              ignore_index=-100, reduction="sum")
        total += nll.item()
        count += int(mask[:, 1:].sum())
    return math.exp(total / count)


@dataclass
class Samples:
    """One response per (prompt, repeat); `responses[i]` continues `prompts[i]`."""

    prompts: list[str]
    responses: list[str]
    new_tokens: list[int]  # generated tokens including eos
    ended: list[bool]  # True when the response ended with eos


@torch.no_grad()
def _sample_batch(model, ids: torch.Tensor, max_new_tokens: int, eos: int) -> list[list[int]]:
    """Ancestral sampling with a KV cache from unpadded prompt ids [b, L]; each row's new
    ids up to and including its first eos. Finished rows leave the batch (and the cache):
    responses are short on average, so this saves most of the work."""
    out = model(input_ids=ids, use_cache=True)
    rows: list[list[int]] = [[] for _ in range(ids.size(0))]
    alive = torch.arange(ids.size(0))  # row index of each sequence still being sampled
    for step in range(max_new_tokens):
        probs = torch.softmax(out.logits[:, -1].float(), dim=-1)
        token = torch.multinomial(probs, 1).squeeze(1)
        for row, t in zip(alive.tolist(), token.tolist()):
            rows[row].append(t)
        going = token != eos
        if step == max_new_tokens - 1 or not bool(going.any()):
            break
        cache = out.past_key_values
        if not bool(going.all()):
            keep = going.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            alive, token = alive[keep], token[keep]
        out = model(input_ids=token[:, None], past_key_values=cache, use_cache=True)
    return rows


@torch.no_grad()
def sample(model, tokenizer, prompts: Sequence[str], repeats: int, max_new_tokens: int,
           batch_size: int, seed: int, on_batch: Callable[[int], None]) -> Samples:
    """Pure sampling (temperature 1, no top-k/top-p: what `generate(do_sample=True,
    top_k=0)` draws from) of `repeats` responses per prompt.

    Prompts are bucketed by token length so no batch needs padding (GPT-2's absolute
    positions then start at 0 exactly as in training). Output order: prompt-major.
    """
    model.eval()
    eos = tokenizer.eos_token_id
    encoded = tokenizer(list(prompts))["input_ids"]
    items = [(i, r) for i in range(len(prompts)) for r in range(repeats)]
    by_length: dict[int, list[tuple[int, int]]] = {}
    for item in items:
        by_length.setdefault(len(encoded[item[0]]), []).append(item)
    result: dict[tuple[int, int], tuple[str, int, bool]] = {}
    torch.manual_seed(seed)
    for length in sorted(by_length):
        group = by_length[length]
        for start in range(0, len(group), batch_size):
            chunk = group[start : start + batch_size]
            ids = torch.tensor([encoded[i] for i, _ in chunk], dtype=torch.long)
            for item, new in zip(chunk, _sample_batch(model, ids, max_new_tokens, eos)):
                text = tokenizer.decode(new, skip_special_tokens=True)
                result[item] = (text, len(new), eos in new)
            on_batch(len(chunk))
    ordered = [result[item] for item in items]
    return Samples(
        prompts=[prompts[i] for i, _ in items],
        responses=[r[0] for r in ordered],
        new_tokens=[r[1] for r in ordered],
        ended=[r[2] for r in ordered],
    )


def preference_matrix(golds: Sequence[float], flip: Sequence[bool] = ()) -> list[list[float]]:
    """pref[i][j] = 1 when response i is preferred to j (higher gold score; ties: neither).
    `flip[p]` swaps the label of the p-th pair (i < j, row-major): label noise."""
    n = len(golds)
    pref = [[0.0] * n for _ in range(n)]
    p = 0
    for i in range(n):
        for j in range(i + 1, n):
            if golds[i] != golds[j]:
                win, lose = (i, j) if golds[i] > golds[j] else (j, i)
                if flip and flip[p]:
                    win, lose = lose, win
                pref[win][lose] = 1.0
            p += 1
    return pref


# One preference group: token ids of K texts (K continuations of one prompt) and the
# K x K matrix pref[i][j] = 1 when text i is preferred to text j.
EncodedGroup = tuple[list[list[int]], list[list[float]]]


def train_preference_groups(model, first: Sequence[EncodedGroup],
                            later: Callable[[], Sequence[EncodedGroup]], switch_step: int,
                            pad_id: int, steps: int, groups_per_step: int, lr: float,
                            warmup: int, center_coef: float, seed: int,
                            on_step: Callable[[float], None]) -> float:
    """Bradley-Terry loss over every preference pair inside groups of K continuations of
    one prompt (InstructGPT's recipe, Ouyang et al. 2022, sec. 3.5: all K-choose-2
    comparisons of a prompt in one batch element, so each forward pass serves K-1 pairs):

        loss = sum over pairs (i preferred to j) of -log sigmoid(r_i - r_j) / #pairs
               + center_coef * mean over groups of (mean_k r_k)^2

    The centering term (Eisenstein et al. 2023, "Helping or Herding?") keeps scores near 0
    without changing any preference. Steps before `switch_step` draw all their groups from
    `first`; from then on half from `first` and half from `later()`, called once at the
    switch (in the toy build: generated-corpus groups first, as they exist before the
    policy does, then policy-sample groups too). Every group has the same K.
    Returns the mean loss of the last 10% of steps.
    """
    model.train()
    opt, sched = _optimizer(model, lr, warmup, steps)
    generator = torch.Generator().manual_seed(seed)

    def batches(groups: Sequence[EncodedGroup], size: int) -> _Batches:
        return _Batches([sum(len(s) for s in ids) for ids, _ in groups], size, generator)

    sources = [(first, batches(first, groups_per_step))]
    losses = []
    for step in range(steps):
        if step == switch_step:
            second = later()
            half = max(1, groups_per_step // 2)
            sources = [(first, batches(first, half)), (second, batches(second, half))]
        batch = [groups[i] for groups, it in sources for i in it.next()]
        ids, mask = pad_batch([s for group_ids, _ in batch for s in group_ids], pad_id)
        scores = model(input_ids=ids, attention_mask=mask).logits[:, 0].view(len(batch), -1)
        pref = torch.tensor([p for _, p in batch], dtype=scores.dtype)  # [G, K, K]
        pair_losses = -F.logsigmoid(scores[:, :, None] - scores[:, None, :]) * pref
        loss = (pair_losses.sum() / pref.sum().clamp(min=1.0)
                + center_coef * scores.mean(dim=1).pow(2).mean())
        losses.append(_optimizer_step(model, loss, opt, sched))
        on_step(losses[-1])
    model.eval()
    return _tail_mean(losses)


def train_regression(model, sources: Sequence[tuple[Sequence[Sequence[int]], Sequence[float]]],
                     pad_id: int, steps: int, batch_size: int, lr: float, warmup: int, seed: int,
                     on_step: Callable[[float], None]) -> float:
    """Mean squared error of each text's score (the model's scalar at its last real token)
    onto its target. `sources` are (token ids, targets) pairs; every batch draws an equal
    share of its `batch_size` texts from each. Returns the mean loss of the last 10% of
    steps."""
    model.train()
    opt, sched = _optimizer(model, lr, warmup, steps)
    generator = torch.Generator().manual_seed(seed)
    share = max(1, batch_size // len(sources))
    draws = [(ids, targets, _Batches([len(s) for s in ids], share, generator))
             for ids, targets in sources]
    losses = []
    for _ in range(steps):
        picked = [(ids[i], targets[i]) for ids, targets, batches in draws for i in batches.next()]
        ids, mask = pad_batch([s for s, _ in picked], pad_id)
        scores = model(input_ids=ids, attention_mask=mask).logits[:, 0]
        loss = F.mse_loss(scores, torch.tensor([t for _, t in picked], dtype=scores.dtype))
        losses.append(_optimizer_step(model, loss, opt, sched))
        on_step(losses[-1])
    model.eval()
    return _tail_mean(losses)


@torch.no_grad()
def score_texts(model, tokenizer, texts: Sequence[str], batch_size: int = 256) -> list[float]:
    """The plain Hugging Face recipe: `model(**tokenizer(texts, padding=True)).logits[:, 0]`."""
    model.eval()
    out: list[float] = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(list(texts[start : start + batch_size]), padding=True,
                        truncation=True, return_tensors="pt")
        out.extend(model(**enc).logits[:, 0].tolist())
    return out
