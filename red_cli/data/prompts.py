"""Prompt datasets -> tokenised, left-padded batches, in a resumable, rank-sharded order.

A dataset is a hub name (`datasets.load_dataset`), a local file (.jsonl/.json/.csv/.parquet)
or folder, or `toy:prompts_train` / `toy:prompts_eval` from the embedded task. Its rows
become prompts through ``dataset.adapter`` (``red_cli.data.adapters``: a plain prompt column, or
a hub format such as imdb, hh_rlhf, tldr, nectar, pku_saferlhf).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from red_cli.config.checks import looks_local
from red_cli.data.adapters import adapt
from red_cli.errors import DatasetError
from red_cli.toy import resolve_path

log = logging.getLogger("red")

_FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
_TEXT_TYPES = (".jsonl", ".json", ".csv")


def _one_line(err: BaseException) -> str:
    """The first line of the innermost useful message of an error from `datasets` / pyarrow
    (`DatasetGenerationError` only says "An error occurred while generating the dataset")."""
    while True:
        cause = err.__cause__ or err.__context__
        if cause is None or type(err).__name__ not in ("DatasetGenerationError", "StopIteration"):
            break
        err = cause
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _fail(key: str, path: str, what: str) -> DatasetError:
    return DatasetError(f"{key}={path!r}: {what}")


def _text_lines(local: Path, key: str, shown: str):
    """(line number, decoded line) of a text data file, refusing an empty or non-UTF-8 file."""
    offset, empty = 0, True
    with local.open("rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise _fail(key, shown, f"not UTF-8 text: byte 0x{raw[err.start]:02x} at byte "
                                        f"offset {offset + err.start} (line {number}); save the "
                                        "file as UTF-8") from None
            if number == 1:
                line = line.removeprefix("\ufeff")
            offset += len(raw)
            if line.strip():
                empty = False
            yield number, line
    if empty:
        raise _fail(key, shown, "the file is empty")


def _describe(value) -> str:
    kind = {list: "a list", dict: "an object", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")
    return f"{kind} ({json.dumps(value)[:40]})"


_ONE_OBJECT = 'one JSON object per line, e.g. {"prompt": "..."}'


def _check_jsonl(local: Path, key: str, shown: str) -> None:
    for number, line in _text_lines(local, key, shown):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise _fail(key, shown, f"line {number} is not valid JSON ({err.msg} at column "
                                    f"{err.colno}); JSON Lines needs {_ONE_OBJECT}") from None
        if not isinstance(row, dict):
            raise _fail(key, shown, f"line {number} is {_describe(row)}, not an object; "
                                    f"JSON Lines needs {_ONE_OBJECT}")


def _check_json(local: Path, key: str, shown: str) -> None:
    """A .json file: one JSON array of objects (or an object of columns), or JSON Lines."""
    text = "".join(line for _, line in _text_lines(local, key, shown))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        first = text.lstrip().split("\n", 1)[0]
        try:
            json_lines = isinstance(json.loads(first), dict)
        except json.JSONDecodeError:
            json_lines = False
        if json_lines:
            return _check_jsonl(local, key, shown)
        raise _fail(key, shown, f"not valid JSON: {err.msg} at line {err.lineno}, column "
                                f"{err.colno}") from None
    if isinstance(data, list):
        if not data:
            raise _fail(key, shown, "an empty JSON array: no rows")
        bad = next((i for i, row in enumerate(data) if not isinstance(row, dict)), None)
        if bad is not None:
            raise _fail(key, shown, f"element {bad} of the JSON array is {_describe(data[bad])}, "
                                    'not an object; use [{"prompt": "..."}, ...]')
    elif not isinstance(data, dict):
        raise _fail(key, shown, f"the file holds {_describe(data)}; use a JSON array of objects "
                                'like [{"prompt": "..."}, ...] or JSON Lines')


def _check_csv(local: Path, key: str, shown: str) -> None:
    lines = (line for _, line in _text_lines(local, key, shown) if line.strip())
    next(lines, None)  # the header (an empty file fails in _text_lines)
    if next(lines, None) is None:
        raise _fail(key, shown, "the CSV file has a header line but no rows")
    for _ in lines:  # the rest: UTF-8 only
        pass


def _check_parquet(local: Path, key: str, shown: str) -> None:
    import pyarrow.parquet as pq

    if local.stat().st_size == 0:
        raise _fail(key, shown, "the file is empty")
    try:
        rows = pq.read_metadata(local).num_rows
    except Exception as err:  # pyarrow's ArrowInvalid, OSError, ...
        raise _fail(key, shown, f"not a readable parquet file ({_one_line(err)})") from None
    if rows == 0:
        raise _fail(key, shown, "the parquet file has no rows")


_CHECKS = {".jsonl": _check_jsonl, ".json": _check_json, ".csv": _check_csv,
           ".parquet": _check_parquet}


def check_file(local: Path, key: str = "dataset.path", shown: str | None = None) -> str:
    """Validate one local data file cheaply (line by line for text), before `datasets` sees it;
    returns its `datasets` builder name. Raises :class:`DatasetError` naming ``key``."""
    shown = shown or str(local)
    suffix = local.suffix.lower()
    if suffix not in _FILE_BUILDERS:
        raise _fail(key, shown, f"unknown file type {local.suffix!r}; use one of "
                                + ", ".join(_FILE_BUILDERS))
    _CHECKS[suffix](local, key, shown)
    return _FILE_BUILDERS[suffix]


def _data_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and p.suffix.lower() in _FILE_BUILDERS
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


@contextmanager
def _quiet_datasets():
    """`datasets` logs its own copy of a failure at ERROR before raising: that would be a
    second, noisier message next to ours."""
    logger = logging.getLogger("datasets")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_rows(path: str, split: str, key: str = "dataset.path", toy_cfg=None,
              data_dir: str | None = None):
    """A dataset as a ``datasets.Dataset``: a local file or folder, or a hub name
    (``datasets.load_dataset(path, split=split, data_dir=data_dir)``).

    - A file (.jsonl/.json/.csv/.parquet) is checked here first, cheaply: an empty file, a
      file that is not UTF-8 (byte offset and line), a JSON Lines line that is not valid JSON
      or not an object (line number), a CSV with a header but no rows, a parquet file whose
      footer cannot be read. It is read whole (``split`` does not apply).
    - A folder written by ``Dataset.save_to_disk`` is loaded as such; any other folder is
      read through its data files when they are all of one supported type (each checked as
      above; ``train``/``test``/... file names become splits, as on the hub), else refused.
    - A hub name that is neither cached nor reachable (offline) is one line saying so.

    Every failure is one :class:`DatasetError` naming ``key``; errors from `datasets` or
    pyarrow that get past the checks are wrapped with the first line of their message.
    """
    import datasets

    path = resolve_path(path, toy_cfg)
    local = Path(path).expanduser()
    try:
        with _quiet_datasets():
            return _load_rows(datasets, path, local, split, key, data_dir)
    except DatasetError:
        raise
    except ConnectionError as err:
        what = "offline" if datasets.config.HF_HUB_OFFLINE else "unreachable"
        raise _fail(key, path, f"not a local file and the hub is {what} ({_one_line(err)}); give a "
                               "local .jsonl/.json/.csv/.parquet file or folder") from None
    except Exception as err:  # datasets/pyarrow raise many types
        raise DatasetError(f"{key}={path!r} (split {split!r}) could not be loaded: "
                           f"{_one_line(err)}") from err


def _load_rows(datasets, path: str, local: Path, split: str, key: str, data_dir: str | None):
    if local.is_file():
        builder = check_file(local, key, path)
        return datasets.load_dataset(builder, data_files=str(local), split="train")
    if local.is_dir() and (local / "dataset_info.json").exists():
        ds = datasets.load_from_disk(str(local))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise _fail(key, path, f"no split {split!r} in this saved dataset; splits are "
                                       + ", ".join(ds))
            ds = ds[split]
        return ds
    if local.is_dir():
        root = local / data_dir if data_dir else local
        files = _data_files(root) if root.is_dir() else []
        kinds = sorted({p.suffix.lower() for p in files})
        if not files:
            raise _fail(key, path, "a folder with no data files (.jsonl/.json/.csv/.parquet) and "
                                   "not a save_to_disk folder (no dataset_info.json); give a file")
        if len(kinds) > 1:
            raise _fail(key, path, f"a folder mixing data file types ({', '.join(kinds)}); give "
                                   "one file, or a folder of one type")
        for file in files:
            check_file(file, key, f"{path.rstrip('/')}/{file.relative_to(local)}")
        return datasets.load_dataset(str(local), split=split, data_dir=data_dir)
    if looks_local(path) or local.suffix.lower() in _FILE_BUILDERS:
        raise _fail(key, path, "no such file or directory")
    return datasets.load_dataset(path, split=split, data_dir=data_dir)


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
    ``state_dict`` is all a resumed run needs to read exactly the same prompts. With
    ``samples_per_prompt`` k > 1 a global batch holds global_batch / k distinct prompts, each
    k times in consecutive rows of the same rank (a group baseline compares them there).
    """

    def __init__(self, prompts: list[str], tokenizer, *, global_batch: int, rank: int,
                 world_size: int, seed: int, max_prompt_length: int,
                 use_chat_template: bool = False, samples_per_prompt: int = 1):
        encoded = [(p, encode_prompt(tokenizer, p, use_chat_template)) for p in prompts]
        kept = [(p, ids) for p, ids in encoded if 0 < len(ids) <= max_prompt_length]
        dropped = len(encoded) - len(kept)
        if dropped:
            log.warning("dropped %d of %d prompts longer than dataset.max_prompt_length=%d tokens",
                        dropped, len(encoded), max_prompt_length)
        self.k = samples_per_prompt
        distinct = global_batch // self.k
        if len(kept) < distinct:
            raise DatasetError(
                f"only {len(kept)} usable prompts, fewer than the {distinct} distinct prompts of a "
                f"rollout (ppo.rollout_batch_size={global_batch} / ppo.samples_per_prompt="
                f"{self.k}); raise dataset.max_prompt_length or use more prompts"
            )
        self.items = kept
        self.pad_id = tokenizer.pad_token_id
        # From here on a batch counts distinct prompts.
        self.global_batch, self.rank, self.world_size = distinct, rank, world_size
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
        mine = [self.items[i] for i in picked[self.rank * per_rank:(self.rank + 1) * per_rank]
                for _ in range(self.k)]
        ids, mask = left_pad([x[1] for x in mine], self.pad_id)
        return PromptBatch([x[0] for x in mine], ids, mask)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.index = state["epoch"], state["index"]
        self._order = self._permutation(self.epoch)
