"""The toy safety world: the gold cost judge (hype words), the cost model's settings and
magic name, and a tiny world built with a cost model."""

import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from red_cli.toy.build import check_settings, config_key, ensure_toy, resolve_toy_path
from red_cli.toy.corpus import opinion_words
from red_cli.toy.cost import HYPE_WORDS, GoldCostJudge, gold_costs
from red_cli.toy.settings import ToyConfig

CONF_TOY = Path(__file__).resolve().parents[2] / "conf" / "toy"
COST_FIELDS = {"cost_model_steps", "cost_model_lr", "cost_model_batch_size"}


def _world(name: str, **changes) -> ToyConfig:
    return ToyConfig(**OmegaConf.to_container(OmegaConf.load(CONF_TOY / f"{name}.yaml")),
                     **changes)


def test_hype_words_are_the_strong_positive_adjectives():
    assert HYPE_WORDS == opinion_words().positive["strong"]
    assert {"great", "excellent", "brilliant", "superb", "wonderful"} <= set(HYPE_WORDS)
    assert not {"good", "fine", "terrific", "bad", "horrible"} & set(HYPE_WORDS)


@pytest.mark.parametrize("text,cost", [
    ("the plot was great.", 1),
    ("the plot was good, the acting was fine.", 0),
    ("", 0),
    ("The Plot Was GREAT!", 1),  # any case
    ("greater, greatest, ungreat", 0),  # whole words only
    ("great, great... great!", 3),  # every occurrence
    ("the plot was not great.", 1),  # lexical: negation does not remove it
    ("a superb cast, wonderful music and an excellent ending", 3),
    ("a great-looking film", 1),  # a hyphen ends a word
])
def test_gold_cost_counts_whole_hype_words(text, cost):
    assert gold_costs([text]) == [float(cost)]


def test_judge_and_module_function_agree_and_refuse_one_string():
    texts = ["the plot was great.", "it runs about two hours.", "superb! wonderful!"]
    assert GoldCostJudge()(texts) == gold_costs(texts) == [1.0, 0.0, 2.0]
    assert gold_costs([]) == []
    with pytest.raises(TypeError):
        GoldCostJudge()("a single string")
    with pytest.raises(TypeError):
        gold_costs("a single string")


def test_worlds_without_a_cost_model_keep_their_cache_folders():
    """The keys computed before the cost-model settings existed."""
    assert config_key(ToyConfig()) == "v2-11c373eb96b9ee20"
    assert config_key(_world("tiny")) == "v2-e02f6e1691f97934"
    assert config_key(_world("long")) == "v2-681056c34dc60da4"


def test_safe_world_is_the_default_plus_a_cost_model():
    safe = _world("safe")
    assert safe.cost_model_steps > 0 and not check_settings(safe)
    changed = {f.name for f in dataclasses.fields(ToyConfig)
               if getattr(safe, f.name) != getattr(ToyConfig(), f.name)}
    assert changed <= COST_FIELDS
    assert config_key(safe) != config_key(ToyConfig())


def test_cost_model_settings_are_checked():
    problems = check_settings(ToyConfig(cost_model_steps=-1, cost_model_lr=0.0,
                                        cost_model_batch_size=1))
    assert len(problems) == 3
    assert all(any(p.startswith(f"toy.{k}=") for p in problems) for k in COST_FIELDS)


def test_cost_model_name_on_a_world_without_one_says_what_to_do():
    with pytest.raises(ValueError, match=r"no cost model.*toy=safe.*cost_model_steps > 0"):
        resolve_toy_path("toy:cost_model", ToyConfig())
    with pytest.raises(ValueError, match="toy=safe"):
        resolve_toy_path("toy:cost_model", {"cost_model_steps": 0})


def test_a_world_without_a_cost_model_lists_no_cost_model_path(tmp_path, monkeypatch):
    from red_cli.toy import build

    monkeypatch.setattr(build, "_build", lambda cfg, out, progress: {"build_seconds": 0.0})
    art = build.ensure_toy(ToyConfig(), cache_root=tmp_path, progress=False)
    assert art.cost_model is None and "toy:cost_model" not in art.summary["paths"]


TINY_SAFE = _world("tiny", cost_model_steps=20)


@pytest.fixture(scope="module")
def tiny_safe(tmp_path_factory):
    """The tiny world with a small cost model; RED_CACHE is reused when set (as in
    tests/smoke), so it is built once per machine."""
    cache = os.environ.get("RED_CACHE") or tmp_path_factory.mktemp("red_cache")
    return ensure_toy(TINY_SAFE, cache_root=cache, progress=False)


def test_tiny_world_with_a_cost_model_builds_a_loadable_cost_model(tiny_safe):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from red_cli.toy import train

    art = tiny_safe
    assert art.cost_model == art.root / "cm_toy"
    assert resolve_toy_path("toy:cost_model", TINY_SAFE, art.root.parents[1]) == art.cost_model
    assert art.summary["paths"]["toy:cost_model"] == str(art.cost_model)
    model = AutoModelForSequenceClassification.from_pretrained(art.cost_model)
    tok = AutoTokenizer.from_pretrained(art.cost_model)
    assert type(model).__name__ == "GPT2ForSequenceClassification"
    assert model.config.num_labels == 1 and tok.padding_side == "right"
    assert tok.get_vocab() == AutoTokenizer.from_pretrained(art.reward_models["toy"]).get_vocab()
    scores = train.score_texts(model, tok, ["the plot was great.", "it runs about two hours."])
    assert all(math.isfinite(s) for s in scores)


def test_tiny_world_summary_reports_the_cost_model(tiny_safe):
    from red_cli.toy.build import format_summary

    s = tiny_safe.summary
    cm, samples = s["cost_model"], s["sft_samples"]
    for key in ("accuracy", "accuracy_corpus_pairs", "accuracy_sft_pairs"):
        assert 0.0 <= cm[key] <= 1.0
    assert cm["n_pairs"]["corpus"] + cm["n_pairs"]["sft"] > 0
    assert cm["mae"] >= 0.0 and cm["score_std"] >= 0.0 and math.isfinite(cm["score_mean"])
    assert cm["params"] > 0 and cm["train_seconds"] > 0
    assert cm["n_train"] == {"corpus": s["corpus"]["n_reviews"] - s["corpus"]["n_val_reviews"]
                             - TINY_SAFE.n_prompt_reviews,
                             "sft": TINY_SAFE.rm_sft_prompts * TINY_SAFE.rm_group_size}
    assert samples["gold_cost_mean"] >= 0.0 and 0.0 <= samples["frac_gold_cost_positive"] <= 1.0
    assert "cost model" in format_summary(s)


def test_importing_the_cost_judge_does_not_import_torch():
    code = ("import sys, red_cli.toy.cost; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
