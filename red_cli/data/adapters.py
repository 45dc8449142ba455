"""Hub dataset formats -> prompts, and reference answers where the format has them.

One function per format (``dataset.adapter``), each reading a loaded ``datasets.Dataset``
with that hub dataset's own column names, so a local file in the same format (.jsonl,
.parquet, ...) works exactly like the hub copy:

- ``column``: the ``dataset.prompt_column`` column as it is (any dataset; no reference). It
  must hold text: a column of numbers (or lists, objects, mixed values) is refused with a
  DatasetError naming the first such row and the dataset's text columns, rather than turned
  into prompts such as "0" / "1" (almost always the wrong column, e.g. ``label``). Nulls are
  skipped.
- ``imdb`` (stanfordnlp/imdb: ``text``, ``label``): the first k whitespace words of a review,
  ``<br />`` removed, k drawn per row uniformly in ``prefix_words`` = [2, 8] from
  ``dataset.seed`` (the ABC IMDb setup; TRL's notebook it follows cuts 2..7 GPT-2 tokens
  instead). Reviews shorter than ``min_text_chars`` are skipped (TRL: 200). No reference.
- ``hh_rlhf`` (Anthropic/hh-rlhf: ``chosen``, ``rejected``, each a whole
  "\\n\\nHuman: ...\\n\\nAssistant: ..." dialogue): single-turn dialogues only; prompt = the
  human turn, reference = the chosen assistant reply.
- ``tldr`` (trl-lib/tldr: ``prompt``, ``completion``; CarperAI/openai_summarize_tldr:
  ``prompt``, ``label``): the "SUBREDDIT: ... TITLE: ... POST: ... TL;DR:" prompt as it is
  (trailing whitespace removed), reference = ``completion`` (else ``label``, else none).
- ``nectar`` (berkeley-nest/Nectar: ``prompt`` "\\n\\nHuman: ...\\n\\nAssistant:",
  ``answers`` = [{answer, model, rank}]): single-turn only; prompt = the human turn,
  reference = the rank-1 answer.
- ``pku_saferlhf`` (PKU-Alignment/PKU-SafeRLHF: ``prompt``, ``response_0``, ``response_1``,
  ``better_response_id``, ``safer_response_id``, ``is_response_{0,1}_safe``): prompt as it
  is, reference = the safer response (none when it is marked unsafe).

:func:`adapt` then keeps prompts of ``min_prompt_chars..max_prompt_chars`` characters, drops
repeated prompts (hub adapters only: PKU-SafeRLHF has several pairs per prompt), and wraps
each in ``prompt_template``. The policy-token length filter (``max_prompt_length``) comes
later, in ``data.PromptStream``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

from red_cli.errors import DatasetError

log = logging.getLogger("red")


class Example(NamedTuple):
    prompt: str
    reference: str | None = None


@dataclass(frozen=True)
class AdapterOptions:
    """The ``dataset.*`` keys adapters read (see ``DatasetConfig``)."""

    prompt_column: str = "prompt"
    prompt_template: str = "{prompt}"
    min_prompt_chars: int = 1
    max_prompt_chars: int | None = None
    prefix_words: tuple[int, int] = (2, 8)
    min_text_chars: int = 0
    seed: int = 0


def options_from(ds_cfg: Any) -> dict:
    """The adapter options of a dataset config node as a plain dict (defaults for keys an
    older run's config.yaml lacks)."""
    out = {f.name: ds_cfg.get(f.name, f.default) for f in fields(AdapterOptions)}
    out["prefix_words"] = list(out["prefix_words"])
    return out


# --------------------------------------------------------------------------- formats

_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ ]?")


def dialogue_turns(text: str) -> list[tuple[str, str]]:
    """Split "\\n\\nHuman: a\\n\\nAssistant: b" into [("Human", "a"), ("Assistant", "b")] (stripped)."""
    parts = _TURN.split(text)
    return [(parts[i], parts[i + 1].strip()) for i in range(1, len(parts), 2)]


def _single_turn(text: str) -> tuple[str, str] | None:
    """(human turn, assistant reply) of a one-exchange dialogue (the reply may be empty,
    as in an open "...\\n\\nAssistant:" prompt); None for anything else."""
    turns = dialogue_turns(text)
    if [role for role, _ in turns] != ["Human", "Assistant"] or not turns[0][1]:
        return None
    return turns[0][1], turns[1][1]


def column(ds, opt: AdapterOptions) -> list[Example]:
    return [Example(str(p)) for p in ds[opt.prompt_column] if p is not None]


def prefix_lengths(n: int, lo: int, hi: int, seed: int) -> list[int]:
    """k_i uniform in [lo, hi] for rows 0..n-1; a function of (seed, n) only."""
    import numpy as np

    return np.random.default_rng(seed).integers(lo, hi + 1, size=n).tolist()


def imdb(ds, opt: AdapterOptions) -> list[Example]:
    lo, hi = opt.prefix_words
    texts = ds["text"]
    out = []
    for text, k in zip(texts, prefix_lengths(len(texts), lo, hi, opt.seed)):
        words = re.sub(r"<br\s*/?>", " ", text or "").split()
        if len(" ".join(words)) >= opt.min_text_chars and words:
            out.append(Example(" ".join(words[:k])))
    return out


def hh_rlhf(ds, opt: AdapterOptions) -> list[Example]:
    out = []
    for chosen in ds["chosen"]:
        pair = _single_turn(chosen or "")
        if pair is not None:
            out.append(Example(pair[0], pair[1] or None))
    return out


def tldr(ds, opt: AdapterOptions) -> list[Example]:
    ref_col = next((c for c in ("completion", "label") if c in ds.column_names), None)
    refs = ds[ref_col] if ref_col else [None] * len(ds)
    return [Example(p.rstrip(), r.strip() if r else None)
            for p, r in zip(ds["prompt"], refs) if p]


def nectar(ds, opt: AdapterOptions) -> list[Example]:
    out = []
    for prompt, answers in zip(ds["prompt"], ds["answers"]):
        pair = _single_turn(prompt or "")
        if pair is None:
            continue
        best = min(answers or [], key=lambda a: a["rank"], default=None)
        out.append(Example(pair[0], best["answer"] if best else None))
    return out


def pku_saferlhf(ds, opt: AdapterOptions) -> list[Example]:
    safe = [list(ds[c]) if c in ds.column_names else [True] * len(ds)
            for c in ("is_response_0_safe", "is_response_1_safe")]
    out = []
    for prompt, r0, r1, safer, safe0, safe1 in zip(ds["prompt"], ds["response_0"], ds["response_1"],
                                                   ds["safer_response_id"], *safe):
        if not prompt:
            continue
        ref = None
        if safer in (0, 1) and (safe0, safe1)[safer]:
            ref = (r0, r1)[safer]
        out.append(Example(prompt.strip(), ref))
    return out


# name -> (adapter, columns it needs; `column` needs dataset.prompt_column)
ADAPTERS: dict[str, tuple[Callable, tuple[str, ...]]] = {
    "column": (column, ()),
    "imdb": (imdb, ("text",)),
    "hh_rlhf": (hh_rlhf, ("chosen",)),
    "tldr": (tldr, ("prompt",)),
    "nectar": (nectar, ("prompt", "answers")),
    "pku_saferlhf": (pku_saferlhf, ("prompt", "response_0", "response_1", "better_response_id",
                                    "safer_response_id")),
}


_TEXT_DTYPES = ("string", "large_string")


def _not_text(ds, col: str) -> str | None:
    """What is wrong with a prompt column that does not hold text (None when it does)."""
    feature = ds.features.get(col) if hasattr(ds, "features") else None
    dtype = getattr(feature, "dtype", None)
    if dtype in _TEXT_DTYPES + ("null",):
        return None
    bad = next(((i, v) for i, v in enumerate(ds[col]) if v is not None and not isinstance(v, str)),
               None)
    if bad is None:
        return None
    text = [c for c, f in ds.features.items() if getattr(f, "dtype", None) in _TEXT_DTYPES]
    kind = f"{dtype} values" if isinstance(dtype, str) else "non-text values"
    where = f"text columns: {', '.join(text)}" if text else "it has no text column"
    return (f"holds {kind} (row {bad[0] + 1}: {bad[1]!r:.40}); prompts must be text, so point "
            f"dataset.prompt_column at a text column ({where})")


def adapt(ds, name: str, options: dict | None = None, source: str = "") -> list[Example]:
    """Rows of ``ds`` -> filtered, de-duplicated, templated examples (see the module doc)."""
    if name not in ADAPTERS:
        raise DatasetError(f"dataset.adapter={name!r}: must be one of {', '.join(ADAPTERS)}")
    options = dict(options or {})
    if "prefix_words" in options:
        options["prefix_words"] = tuple(options["prefix_words"])
    opt = AdapterOptions(**options)
    fn, needed = ADAPTERS[name]
    if name == "column" and opt.prompt_column not in ds.column_names:
        raise DatasetError(f"dataset.prompt_column={opt.prompt_column!r} is not a column of "
                           f"{source!r}; columns are: {', '.join(ds.column_names)}")
    if name == "column":
        problem = _not_text(ds, opt.prompt_column)
        if problem:
            raise DatasetError(f"dataset.prompt_column={opt.prompt_column!r} of {source!r} {problem}")
    missing = [c for c in needed if c not in ds.column_names]
    if missing:
        raise DatasetError(f"dataset.adapter={name!r} needs the column(s) {', '.join(missing)}, "
                           f"which {source!r} lacks; columns are: {', '.join(ds.column_names)}")
    rows = fn(ds, opt)
    hi = opt.max_prompt_chars
    kept = [e for e in rows if opt.min_prompt_chars <= len(e.prompt) and (hi is None or len(e.prompt) <= hi)
            and e.prompt.strip()]
    if name != "column":
        seen: set[str] = set()
        kept = [e for e in kept if not (e.prompt in seen or seen.add(e.prompt))]
    if len(kept) < len(ds):
        log.info("dataset.adapter=%s: %d of %d rows of %s kept as prompts", name, len(kept),
                 len(ds), source)
    return [e._replace(prompt=opt.prompt_template.replace("{prompt}", e.prompt)) for e in kept]
