"""The toy review generator: deterministic, balanced, built from the VADER lexicon."""

import random

from red_cli.toy import corpus
from red_cli.toy.judge import gold_scores


def test_same_seed_same_reviews_other_seed_other_reviews():
    a = corpus.generate_reviews(300, seed=3, score=gold_scores)
    b = corpus.generate_reviews(300, seed=3, score=gold_scores)
    c = corpus.generate_reviews(300, seed=4, score=gold_scores)
    assert a == b
    assert a[0] != c[0]


def test_reviews_are_distinct_balanced_and_short():
    texts, golds = corpus.generate_reviews(2000, seed=0, score=gold_scores)
    assert len(set(texts)) == len(texts) == 2000
    assert golds == gold_scores(texts)
    positive = sum(g > 0.05 for g in golds)
    negative = sum(g < -0.05 for g in golds)
    assert abs(positive - negative) <= 1
    assert positive + negative >= 0.9 * len(texts)
    assert abs(sum(golds) / len(golds)) < 0.1
    assert max(len(t.split()) for t in texts) <= 22


def test_opinion_words_come_from_the_vader_lexicon_with_their_sign():
    lexicon = corpus.vader_lexicon()
    words = corpus.opinion_words()
    for sign, table in ((1, words.positive), (-1, words.negative)):
        assert {"weak", "medium", "strong"} <= set(table) or len(table) >= 2
        for adjectives in table.values():
            for word in adjectives:
                assert lexicon[word] * sign >= 0.5


def test_fillers_and_aspects_are_neutral():
    lexicon = corpus.vader_lexicon()
    for aspect, _ in corpus.ASPECTS:
        assert not any(w in lexicon for w in aspect.split()), aspect
    fillers = list(corpus.FILLERS_SIMPLE)
    fillers += [f"i watched it {w} with {o}" for w in corpus._WHEN for o in corpus._WHO]
    assert gold_scores(fillers) == [0.0] * len(fillers)
    assert gold_scores(list(corpus.OPENERS)) == [0.0] * len(corpus.OPENERS)


def test_prompt_split_ends_on_a_word_and_concatenates_back():
    text = "overall, the plot was not very good, but the acting was great!"
    prompt, response = corpus.split_prompt(text, 1)
    assert (prompt, response) == ("overall", ", the plot was not very good, but the acting was great!")
    prompt, response = corpus.split_prompt(text, 4)
    assert (prompt, response) == ("overall, the plot was", " not very good, but the acting was great!")
    assert corpus.split_prompt("too short", 2) is None


def test_prompts_have_the_configured_number_of_words():
    texts, _ = corpus.generate_reviews(500, seed=1, score=gold_scores)
    prompts = corpus.make_prompts(texts, random.Random(0), 2, 6)
    assert len(set(prompts)) == len(prompts) > 100
    for p in prompts:
        assert 2 <= len(corpus.word_ends(p)) <= 6
        assert p[-1].isalpha() or p[-1] == "'"
        assert any(t.startswith(p) and t[len(p)] in " ,.!" for t in texts)


def test_same_prefix_groups_are_continuations_of_one_prompt():
    texts, golds = corpus.generate_reviews(1000, seed=2, score=gold_scores)
    gold_of = dict(zip(texts, golds))
    groups = corpus.same_prefix_groups(texts, golds, 100, 4, random.Random(0), 2, 6)
    assert len(groups) == 100
    for g in groups:
        assert len(set(g.responses)) == 4 and g.source == "corpus"
        assert 2 <= len(corpus.word_ends(g.prompt)) <= 6
        for response, gold in zip(g.responses, g.golds):
            assert response[0] in " ,.!"
            assert gold_of[g.prompt + response] == gold
    assert groups[0].pairs() == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    again = corpus.same_prefix_groups(texts, golds, 100, 4, random.Random(0), 2, 6)
    assert again == groups
