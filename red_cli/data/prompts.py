"""Prompt datasets -> tokenised, left-padded batches, in a resumable, rank-sharded order.

A dataset is a hub name (`datasets.load_dataset`), a local file (.jsonl/.json/.csv/.parquet)
or folder, or `toy:prompts_train` / `toy:prompts_eval` from the embedded task. Its rows
become prompts through ``dataset.adapter`` (``red_cli.data.adapters``: a plain prompt column, or
a hub format such as imdb, hh_rlhf, tldr, nectar, pku_saferlhf).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from red_cli.config.checks import looks_local
from red_cli.data.adapters import adapt
from red_cli.errors import DatasetError
from red_cli.toy import resolve_path

log = logging.getLogger("red")

_FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def load_rows(path: str, split: str, key: str = "dataset.path", toy_cfg=None,
              data_dir: str | None = None):
    """A dataset as a ``datasets.Dataset``: a local file or saved folder, or a hub name
    (``datasets.load_dataset(path, split=split, data_dir=data_dir)``)."""
    import datasets

    path = resolve_path(path, toy_cfg)
    local = Path(path).expanduser()
    try:
        if local.is_file():
            builder = _FILE_BUILDERS.get(local.suffix)
            if builder is None:
                raise DatasetError(f"{key}={path!r}: unknown file type {local.suffix!r}; use one of "
                                   + ", ".join(_FILE_BUILDERS))
            ds = datasets.load_dataset(builder, data_files=str(local), split="train")
        elif local.is_dir() and (local / "dataset_info.json").exists():
            ds = datasets.load_from_disk(str(local))
            if isinstance(ds, datasets.DatasetDict):
                ds = ds[split]
        elif looks_local(path):
            raise DatasetError(f"{key}={path!r}: no such file or directory")
        else:
            ds = datasets.load_dataset(path, split=split, data_dir=data_dir)
    except DatasetError:
        raise
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as err:
        raise DatasetError(f"{key}={path!r} (split {split!r}) could not be loaded: {err}") from err
    return ds


def load_examples(path: str, split: str, prompt_column: str = "prompt", key: str = "dataset.path",
                  toy_cfg=None, max_prompts: int | None = None, *, adapter: str = "column",
                  options: dict | None = None, data_dir: str | None = None) -> list:
    """Prompts (and reference answers) of a dataset through its adapter (``data.adapters``)."""
    ds = load_rows(path, split, key, toy_cfg, data_dir)
    examples = adapt(ds, adapter, {**(options or {}), "prompt_column": prompt_column}, source=path)
    if max_prompts is not None:
        examples = examples[:max_prompts]
    if not examples:
        what = f"column {prompt_column!r}" if adapter == "column" else f"dataset.adapter={adapter!r}"
        raise DatasetError(f"{key}={path!r}: no non-empty prompts in {what} after the length filters")
    return examples


def load_prompts(path: str, split: str, prompt_column: str = "prompt", key: str = "dataset.path",
                 toy_cfg=None, max_prompts: int | None = None, *, adapter: str = "column",
                 options: dict | None = None, data_dir: str | None = None) -> list[str]:
    """The prompts of :func:`load_examples`."""
    return [e.prompt for e in load_examples(path, split, prompt_column, key, toy_cfg, max_prompts,
                                            adapter=adapter, options=options, data_dir=data_dir)]


def encode_prompt(tokenizer, prompt: str, use_chat_template: bool = False) -> list[int]:
    """Token ids a policy continues from. Never ends in EOS, which would end the response at once."""
    if use_chat_template:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True,
        )
        # transformers 5 returns a BatchEncoding (a Mapping, not a dict).
        if isinstance(ids, Mapping):
            ids = ids["input_ids"]
        return list(ids)
    ids = tokenizer(prompt)["input_ids"]
    # Some tokenizers (the toy one included, for the reward models' sake) append EOS.
    while ids and ids[-1] == tokenizer.eos_token_id:
        ids = ids[:-1]
    return ids


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[b] ragged id lists -> ids [b, L], attention_mask [b, L] (bool), padding on the left."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.bool)
    for i, seq in enumerate(sequences):
        if seq:
            ids[i, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
            mask[i, width - len(seq):] = True
    return ids, mask


@dataclass
class PromptBatch:
    texts: list[str]
    input_ids: torch.Tensor  # [b, P] left-padded
    attention_mask: torch.Tensor  # [b, P] bool


class PromptStream:
    """Endless epochs of shuffled prompts; each rank reads its own slice of every global batch.

    The order is a function of (seed, epoch) only, so the position (epoch, index) in
    ``state_dict`` is all a resumed run needs to read exactly the same prompts.
    """

    def __init__(self, prompts: list[str], tokenizer, *, global_batch: int, rank: int,
                 world_size: int, seed: int, max_prompt_length: int,
                 use_chat_template: bool = False):
        encoded = [(p, encode_prompt(tokenizer, p, use_chat_template)) for p in prompts]
        kept = [(p, ids) for p, ids in encoded if 0 < len(ids) <= max_prompt_length]
        dropped = len(encoded) - len(kept)
        if dropped:
            log.warning("dropped %d of %d prompts longer than dataset.max_prompt_length=%d tokens",
                        dropped, len(encoded), max_prompt_length)
        if len(kept) < global_batch:
            raise DatasetError(
                f"only {len(kept)} usable prompts, fewer than ppo.rollout_batch_size={global_batch}; "
                "raise dataset.max_prompt_length or use more prompts"
            )
        self.items = kept
        self.pad_id = tokenizer.pad_token_id
        self.global_batch, self.rank, self.world_size = global_batch, rank, world_size
        self.seed = seed
        self.epoch, self.index = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(len(self.items), generator=gen).tolist()

    def next_batch(self) -> PromptBatch:
        # A global batch never straddles two epochs: the tail of an epoch is skipped.
        if self.index + self.global_batch > len(self._order):
            self.epoch, self.index = self.epoch + 1, 0
            self._order = self._permutation(self.epoch)
        picked = self._order[self.index:self.index + self.global_batch]
        self.index += self.global_batch
        per_rank = self.global_batch // self.world_size
        mine = [self.items[i] for i in picked[self.rank * per_rank:(self.rank + 1) * per_rank]]
        ids, mask = left_pad([x[1] for x in mine], self.pad_id)
        return PromptBatch([x[0] for x in mine], ids, mask)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.index = state["epoch"], state["index"]
        self._order = self._permutation(self.epoch)
