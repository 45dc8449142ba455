"""The toy task's gold judge (VADER compound) on hand-picked sentences."""

import pytest

from red_cli.toy.judge import GoldJudge, gold_scores

POSITIVE = ["the plot was good.", "a wonderful film with brilliant acting!",
            "the music was not bad at all."]
NEGATIVE = ["the plot was bad.", "an awful, boring movie.", "the acting was not good."]


def test_positive_above_zero_above_negative():
    pos, neg = gold_scores(POSITIVE), gold_scores(NEGATIVE)
    assert min(pos) > 0 > max(neg)


def test_negation_intensifiers_and_contrast():
    good, not_good, very_good = gold_scores(["good", "not good", "very good"])
    assert not_good < 0 < good < very_good
    before, after = gold_scores(["the plot was good, but the acting was awful.",
                                 "the plot was awful, but the acting was good."])
    assert before < 0 < after  # VADER weighs the clause after "but" more


def test_scores_are_in_range_and_neutral_text_is_zero():
    scores = gold_scores(POSITIVE + NEGATIVE + ["it runs about two hours."])
    assert all(-1.0 <= s <= 1.0 for s in scores)
    assert scores[-1] == 0.0


def test_class_and_module_function_agree():
    texts = POSITIVE + NEGATIVE
    assert GoldJudge()(texts) == gold_scores(texts)
    assert gold_scores([]) == []
    with pytest.raises(TypeError):
        GoldJudge()("a single string")
