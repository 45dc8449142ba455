"""Prompt datasets: hub formats through adapters (``adapters``), tokenised left-padded batches in
a resumable rank-sharded order (``prompts``)."""

from red_cli.data.adapters import ADAPTERS, AdapterOptions, Example, adapt, options_from
from red_cli.data.prompts import (
    PromptBatch,
    PromptStream,
    encode_prompt,
    left_pad,
    load_examples,
    load_prompts,
    load_rows,
)

__all__ = ["ADAPTERS", "AdapterOptions", "Example", "PromptBatch", "PromptStream", "adapt",
           "encode_prompt", "left_pad", "load_examples", "load_prompts", "load_rows",
           "options_from"]
