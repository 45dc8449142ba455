"""Each dataset adapter on a small local file in its hub dataset's exact column format."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from red_cli.data import load_examples, load_prompts
from red_cli.data.adapters import ADAPTERS, AdapterOptions, dialogue_turns, prefix_lengths
from red_cli.errors import DatasetError


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _parquet(path, rows):
    pd.DataFrame(rows).to_parquet(path)
    return str(path)


def _load(path, adapter, **options):
    return load_examples(path, "train", adapter=adapter, options=options)


# --------------------------------------------------------------------------- imdb

REVIEWS = [
    "I loved this movie.<br /><br />The acting was superb and the plot kept me guessing until the very end of it all.",
    "Terrible. Just terrible.<br />Avoid at all costs, it is a waste of two hours of anyone's life and money.",
    "Short one.",
    "An odd film  with\tstrange   spacing, but a lovely score, fine photography and a memorable final scene overall.",
]


def test_imdb_prefixes_are_first_k_words_with_k_reproducible(tmp_path):
    path = _parquet(tmp_path / "imdb.parquet", [{"text": t, "label": i % 2} for i, t in enumerate(REVIEWS)])
    got = [e.prompt for e in _load(path, "imdb", seed=3, min_text_chars=50)]
    ks = prefix_lengths(len(REVIEWS), 2, 8, 3)
    words = [t.replace("<br />", " ").split() for t in REVIEWS]
    # Row 2 is shorter than min_text_chars; <br /> never survives; whitespace collapses.
    assert got == [" ".join(w[:k]) for i, (w, k) in enumerate(zip(words, ks)) if i != 2]
    assert all("<br" not in p and "  " not in p for p in got)
    assert _load(path, "imdb", seed=3, min_text_chars=50) == _load(path, "imdb", seed=3, min_text_chars=50)
    assert all(e.reference is None for e in _load(path, "imdb"))


def test_imdb_prefix_lengths_cover_the_range_and_depend_on_the_seed():
    ks = prefix_lengths(2000, 2, 8, seed=0)
    assert set(ks) == set(range(2, 9))
    assert ks == prefix_lengths(2000, 2, 8, seed=0)
    assert ks != prefix_lengths(2000, 2, 8, seed=1)
    # A row's k does not depend on how many rows follow it.
    assert prefix_lengths(10, 2, 8, seed=0) == ks[:10]


def test_imdb_drops_short_reviews_by_characters(tmp_path):
    path = _jsonl(tmp_path / "imdb.jsonl", [{"text": "a b c", "label": 0}, {"text": "x " * 150, "label": 1}])
    got = _load(path, "imdb", min_text_chars=200, prefix_words=[2, 2])
    assert [e.prompt for e in got] == ["x x"]


# --------------------------------------------------------------------------- hh-rlhf

HH = [
    {"chosen": "\n\nHuman: What is a good name for a cat?\n\nAssistant: How about Miso?",
     "rejected": "\n\nHuman: What is a good name for a cat?\n\nAssistant: Cat."},
    {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke.\n\nAssistant: No.",
     "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke.\n\nAssistant: Why?"},
    {"chosen": "\n\nHuman: How do I boil an egg?\n\nAssistant: Put it in boiling water\n\nfor nine minutes.",
     "rejected": "\n\nHuman: How do I boil an egg?\n\nAssistant: Fry it."},
]


def test_hh_rlhf_keeps_single_turn_human_prompt_and_chosen_reply(tmp_path):
    got = _load(_jsonl(tmp_path / "hh.jsonl", HH), "hh_rlhf")
    assert [tuple(e) for e in got] == [
        ("What is a good name for a cat?", "How about Miso?"),
        ("How do I boil an egg?", "Put it in boiling water\n\nfor nine minutes."),
    ]


def test_dialogue_turns():
    assert dialogue_turns(HH[1]["chosen"]) == [("Human", "Hi"), ("Assistant", "Hello!"),
                                               ("Human", "Tell me a joke."), ("Assistant", "No.")]
    assert dialogue_turns("\n\nHuman: Q?\n\nAssistant:") == [("Human", "Q?"), ("Assistant", "")]


# --------------------------------------------------------------------------- tl;dr

POST = "SUBREDDIT: r/cats\n\nTITLE: My cat ignores me\n\nPOST: She only comes when the can opens.\n\nTL;DR:"


def test_tldr_trl_lib_format(tmp_path):
    path = _parquet(tmp_path / "tldr.parquet", [{"prompt": POST, "completion": " cat loves food, not me"}])
    assert [tuple(e) for e in _load(path, "tldr")] == [(POST, "cat loves food, not me")]


def test_tldr_carperai_format(tmp_path):
    carper = "SUBREDDIT: r/cats\nTITLE: My cat ignores me\nPOST: She only comes when the can opens.\nTL;DR: "
    path = _jsonl(tmp_path / "tldr.jsonl", [{"prompt": carper, "label": "cat loves food"}])
    assert [tuple(e) for e in _load(path, "tldr")] == [(carper.rstrip(), "cat loves food")]


# --------------------------------------------------------------------------- nectar

NECTAR = [
    {"prompt": "\n\nHuman: Name three primary colours.\n\nAssistant:",
     "answers": [{"answer": "Red, green, blue.", "model": "m2", "rank": 2.0},
                 {"answer": "Red, yellow and blue.", "model": "m1", "rank": 1.0}],
     "turns": 1, "num_responses": 2, "source": ["x"], "good_natured": True},
    {"prompt": "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Bye\n\nAssistant:",
     "answers": [{"answer": "Bye!", "model": "m1", "rank": 1.0}],
     "turns": 2, "num_responses": 1, "source": ["x"], "good_natured": True},
]


@pytest.mark.parametrize("writer", [_jsonl, _parquet])
def test_nectar_single_turn_and_rank_one_reference(tmp_path, writer):
    path = writer(tmp_path / ("n.jsonl" if writer is _jsonl else "n.parquet"), NECTAR)
    assert [tuple(e) for e in _load(path, "nectar")] == [("Name three primary colours.",
                                                          "Red, yellow and blue.")]


# --------------------------------------------------------------------------- pku-saferlhf

PKU = [
    {"prompt": "How do I pick a lock?", "response_0": "Here is how...", "response_1": "Call a locksmith.",
     "is_response_0_safe": False, "is_response_1_safe": True, "better_response_id": 0,
     "safer_response_id": 1},
    # The same prompt with another pair: kept once.
    {"prompt": "How do I pick a lock?", "response_0": "No.", "response_1": "Use a pin.",
     "is_response_0_safe": True, "is_response_1_safe": False, "better_response_id": 1,
     "safer_response_id": 0},
    {"prompt": "Insult my neighbour.", "response_0": "You fool.", "response_1": "Idiot.",
     "is_response_0_safe": False, "is_response_1_safe": False, "better_response_id": 0,
     "safer_response_id": 0},
]


def test_pku_saferlhf_prompts_once_with_the_safer_reply(tmp_path):
    got = _load(_jsonl(tmp_path / "pku.jsonl", PKU), "pku_saferlhf")
    assert [tuple(e) for e in got] == [("How do I pick a lock?", "Call a locksmith."),
                                       ("Insult my neighbour.", None)]


# --------------------------------------------------------------------------- shared


def test_length_filters_and_template_apply_to_every_adapter(tmp_path):
    path = _jsonl(tmp_path / "hh.jsonl", HH)
    got = _load(path, "hh_rlhf", min_prompt_chars=23, max_prompt_chars=30,
                prompt_template="\n\nHuman: {prompt}\n\nAssistant:")
    # "What is a good name for a cat?" is 30 characters, the egg question 21.
    assert [e.prompt for e in got] == ["\n\nHuman: What is a good name for a cat?\n\nAssistant:"]


def test_column_adapter_is_the_plain_prompt_column(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", [{"q": "a b"}, {"q": " "}, {"q": "a b"}, {"q": None}])
    assert load_prompts(path, "train", "q") == ["a b", "a b"]  # no de-duplication here


def test_missing_columns_name_the_adapter_and_the_columns(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", [{"prompt": "x"}])
    with pytest.raises(DatasetError, match=r"dataset\.adapter='nectar' needs the column\(s\) answers"):
        _load(path, "nectar")
    with pytest.raises(DatasetError, match=r"dataset\.prompt_column='text' is not a column"):
        load_prompts(path, "train", "text")


def test_unknown_adapter_lists_the_valid_names(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", [{"prompt": "x"}])
    with pytest.raises(DatasetError, match="must be one of column, imdb, hh_rlhf"):
        _load(path, "squad")


def test_nothing_left_after_filters_is_one_clear_error(tmp_path):
    path = _jsonl(tmp_path / "hh.jsonl", HH)
    with pytest.raises(DatasetError, match="no non-empty prompts"):
        _load(path, "hh_rlhf", min_prompt_chars=500)


def test_options_cover_every_adapter():
    assert set(ADAPTERS) == {"column", "imdb", "hh_rlhf", "tldr", "nectar", "pku_saferlhf"}
    assert AdapterOptions().prefix_words == (2, 8)


def test_eval_reads_prompts_through_the_runs_adapter(tmp_path):
    from omegaconf import OmegaConf

    from red_cli.config.schema_eval import PromptsConfig
    from red_cli.eval.sides import prompt_settings, read_prompts
    from red_cli.runs import RunInfo

    path = _jsonl(tmp_path / "nectar.jsonl", NECTAR)
    run = RunInfo(tmp_path, OmegaConf.create({"dataset": {
        "path": "berkeley-nest/Nectar", "split": "train[:98%]", "eval_path": path,
        "eval_split": "train[98%:]", "prompt_column": "prompt", "adapter": "nectar",
        "data_dir": None, "prompt_template": "Q: {prompt}", "max_prompt_length": 64}}))
    settings = prompt_settings(OmegaConf.structured(PromptsConfig), run, 4)
    assert settings["adapter"] == "nectar" and settings["adapter_options"]["prompt_template"] == "Q: {prompt}"
    assert read_prompts(settings, None) == ["Q: Name three primary colours."]
    # An explicit plain column, or a run from before adapters, reads the column as before.
    explicit = prompt_settings(OmegaConf.structured(PromptsConfig(column="prompt")), run, 4)
    assert "adapter" not in explicit
    old = RunInfo(tmp_path, OmegaConf.create({"dataset": {"path": path, "prompt_column": "prompt"}}))
    assert "adapter" not in prompt_settings(OmegaConf.structured(PromptsConfig), old, 4)
