"""The toy world's text: a seeded generator of short, lowercase English movie reviews.

Opinion words and their strengths come from the VADER lexicon that ships inside
`vaderSentiment` (the same lexicon the gold judge reads), combined with aspects ("the plot",
"the acting", ...), intensifiers and dampeners, negation ("not"), contrasts ("but",
"although") and neutral filler. Reviews are balanced by the sign of their gold score so an
LM trained on them starts near neutral.

Prompt/response split: a prompt is a review cut right after its k-th word (k in
[min_words, max_words]); the response is the rest, which therefore starts with a space or a
punctuation mark, so `prompt + response` is always the original text.
"""

from __future__ import annotations

import functools
import os
import random
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# Candidate adjectives; only those present in the VADER lexicon are used, with its valence.
_POSITIVE_CANDIDATES = (
    "good great excellent brilliant superb wonderful fantastic amazing lovely beautiful "
    "charming funny fun enjoyable entertaining nice clever smart strong powerful impressive "
    "pleasant fine solid stunning perfect delightful gorgeous sweet fresh inspiring engaging "
    "hilarious awesome outstanding terrific magnificent marvelous exciting interesting "
    "thoughtful elegant creative sincere glorious splendid fabulous cool heartwarming"
).split()
_NEGATIVE_CANDIDATES = (
    "bad awful terrible horrible boring dull weak poor disappointing stupid annoying painful "
    "flawed messy confusing lame pathetic ugly dumb dreadful worthless ridiculous lousy "
    "miserable depressing awkward empty irritating frustrating offensive unpleasant "
    "disastrous horrendous sad"
).split()

# (noun phrase, is_plural). Nouns with a VADER valence (humor, jokes, villain, hero) are
# left out so that aspects stay neutral.
ASPECTS: tuple[tuple[str, bool], ...] = (
    ("plot", False), ("acting", False), ("music", False), ("ending", False), ("cast", False),
    ("story", False), ("script", False), ("dialogue", False), ("soundtrack", False),
    ("pacing", False), ("direction", False), ("cinematography", False),
    ("characters", True), ("visuals", True), ("lead actor", False), ("editing", False),
    ("visual effects", True), ("premise", False), ("finale", False),
    ("performances", True), ("camera work", False), ("costumes", True),
    ("set design", False), ("twist", False), ("first half", False), ("second act", False),
    ("opening scene", False), ("dialogue scenes", True), ("action scenes", True),
)
FILMS = ("this movie", "the movie", "this film", "the film", "it")
BOOSTERS = ("very", "really", "quite", "so", "extremely", "incredibly", "totally")
DAMPENERS = ("somewhat", "slightly", "kind of", "a little")
NEUTRAL_MODIFIERS = ("fairly", "rather", "mostly", "at times")
VERBS_SINGULAR = ("was", "is", "felt", "seemed")
VERBS_PLURAL = ("were", "are", "felt", "seemed")
OPENERS = ("overall,", "i think", "in my opinion,", "for me,", "all in all,", "i felt that",
           "to me,", "in the end,")
# Neutral sentences (VADER compound exactly 0; tests check it).
_WHEN = ("last night", "on a sunday", "last week", "yesterday", "this weekend",
         "on a long flight", "at the cinema", "at home")
_WHO = ("my brother", "my sister", "my parents", "a colleague", "my cousin", "my kids",
        "my partner", "my neighbour")
FILLERS_SIMPLE = (
    "it runs about two hours", "the film is set in a small town",
    "the story follows a young doctor", "it is based on a book",
    "i went in knowing nothing about it", "it is the second film by this director",
    "the movie takes place in the seventies", "most of it was shot in the desert",
    "it came out last year", "the story follows two brothers",
    "it is a remake of an older film", "the film is mostly in black and white",
    "the story is told in flashbacks", "it is the third part of a series",
)


@functools.cache
def vader_lexicon() -> dict[str, float]:
    """word -> mean valence, read from vader_lexicon.txt inside the vaderSentiment package."""
    import vaderSentiment

    path = os.path.join(os.path.dirname(vaderSentiment.__file__), "vader_lexicon.txt")
    lexicon = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            word, valence, *_ = line.rstrip("\n").split("\t")
            lexicon[word] = float(valence)
    return lexicon


@dataclass(frozen=True)
class OpinionWords:
    """Adjectives by polarity and strength (|valence| < 1.6 weak, < 2.4 medium, else strong)."""

    positive: dict[str, tuple[str, ...]]
    negative: dict[str, tuple[str, ...]]


def _strength(valence: float) -> str:
    v = abs(valence)
    return "weak" if v < 1.6 else "medium" if v < 2.4 else "strong"


@functools.cache
def opinion_words() -> OpinionWords:
    lexicon = vader_lexicon()

    def bins(candidates: Sequence[str], sign: int) -> dict[str, tuple[str, ...]]:
        out: dict[str, list[str]] = {"weak": [], "medium": [], "strong": []}
        for word in candidates:
            valence = lexicon.get(word)
            if valence is not None and valence * sign >= 0.5:
                out[_strength(valence)].append(word)
        return {k: tuple(v) for k, v in out.items() if v}

    return OpinionWords(positive=bins(_POSITIVE_CANDIDATES, 1),
                        negative=bins(_NEGATIVE_CANDIDATES, -1))


class ReviewGenerator:
    """Draws one review at a time from a `random.Random`; same seed -> same sequence.

    ``units``: (fewest, most) sentences per review; (1, 3) keeps the original weights
    0.5 / 0.4 / 0.1, any other range draws uniformly.
    """

    def __init__(self, rng: random.Random, units: tuple[int, int] = (1, 3)):
        self.rng = rng
        self.words = opinion_words()
        self.units = tuple(units)

    def adjective(self, polarity: int) -> str:
        table = self.words.positive if polarity > 0 else self.words.negative
        strength = self.rng.choice(sorted(table))
        return self.rng.choice(table[strength])

    def modified_adjective(self, polarity: int) -> str:
        r = self.rng.random()
        adj = self.adjective(polarity)
        if r < 0.3:
            return f"{self.rng.choice(BOOSTERS)} {adj}"
        if r < 0.4:
            return f"{self.rng.choice(DAMPENERS)} {adj}"
        if r < 0.5:
            return f"{self.rng.choice(NEUTRAL_MODIFIERS)} {adj}"
        return adj

    def predicate(self, polarity: int) -> str:
        """`{modified adjective}` or a negated opposite ("not very good" for negative)."""
        if self.rng.random() < 0.2:
            booster = f"{self.rng.choice(BOOSTERS)} " if self.rng.random() < 0.3 else ""
            return f"not {booster}{self.adjective(-polarity)}"
        return self.modified_adjective(polarity)

    def clause(self, polarity: int, fragment_ok: bool = True) -> str:
        rng = self.rng
        aspect, plural = rng.choice(ASPECTS)
        verb = rng.choice(VERBS_PLURAL if plural else VERBS_SINGULAR)
        r = rng.random()
        if r < 0.55:
            return f"the {aspect} {verb} {self.predicate(polarity)}"
        if r < 0.7:
            return f"i found the {aspect} {self.predicate(polarity)}"
        if r < 0.85 or not fragment_ok:
            film = rng.choice(FILMS)
            return f"{film} {'is' if rng.random() < 0.5 else 'was'} {self.predicate(polarity)}"
        return f"{self.modified_adjective(polarity)} {aspect}"

    def filler(self) -> str:
        if self.rng.random() < 0.5:
            return self.rng.choice(FILLERS_SIMPLE)
        return f"i watched it {self.rng.choice(_WHEN)} with {self.rng.choice(_WHO)}"

    def unit(self, polarity: int) -> str:
        rng = self.rng
        r = rng.random()
        if r < 0.45:
            return self.clause(polarity if rng.random() < 0.8 else -polarity)
        if r < 0.65:  # contrast: the second half carries the review's polarity
            a, b = self.clause(-polarity, False), self.clause(polarity, False)
            return f"{a}, but {b}" if rng.random() < 0.6 else f"although {a}, {b}"
        if r < 0.8:
            return f"{self.clause(polarity)} and {self.clause(polarity)}"
        return self.filler()

    def review(self) -> str:
        rng = self.rng
        polarity = 1 if rng.random() < 0.5 else -1
        if self.units == (1, 3):
            n_units = rng.choices((1, 2, 3), weights=(0.5, 0.4, 0.1))[0]
        else:
            n_units = rng.randint(*self.units)
        units = [self.unit(polarity) for _ in range(n_units)]
        if rng.random() < 0.3 and units[0].startswith(("the ", "i found", *FILMS)):
            units[0] = f"{rng.choice(OPENERS)} {units[0]}"
        end = "!" if rng.random() < 0.15 else "."
        return ". ".join(units) + end


def generate_reviews(
    n: int,
    seed: int,
    score: Callable[[list[str]], list[float]],
    max_words: int = 20,
    progress: Callable[[int], None] | None = None,
    units: tuple[int, int] = (1, 3),
) -> tuple[list[str], list[float]]:
    """`n` distinct reviews and their gold scores, balanced by sign of the gold score.

    A review is accepted when its class (gold > 0.05 positive, < -0.05 negative, otherwise
    neutral) is not ahead: |#positive - #negative| <= 1 and neutral <= 10% of n.
    Candidates longer than `max_words` words are redrawn. Deterministic in `seed`.
    """
    gen = ReviewGenerator(random.Random(seed), units)
    texts: list[str] = []
    golds: list[float] = []
    seen: set[str] = set()
    counts = {"pos": 0, "neg": 0, "neu": 0}
    neutral_cap = n // 10
    attempts = 0
    while len(texts) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise RuntimeError(f"the review generator could not produce {n} distinct reviews")
        batch = []
        while len(batch) < 256:
            text = gen.review()
            if text not in seen and len(text.split()) <= max_words:
                seen.add(text)
                batch.append(text)
        for text, g in zip(batch, score(batch)):
            cls = "pos" if g > 0.05 else "neg" if g < -0.05 else "neu"
            if cls == "neu" and counts["neu"] >= neutral_cap:
                continue
            if cls == "pos" and counts["pos"] > counts["neg"]:
                continue
            if cls == "neg" and counts["neg"] > counts["pos"]:
                continue
            counts[cls] += 1
            texts.append(text)
            golds.append(g)
            if progress is not None:
                progress(1)
            if len(texts) == n:
                break
    return texts, golds


_WORD = re.compile(r"[a-z']+")


def word_ends(text: str) -> list[int]:
    """Character offset just after each word of `text`."""
    return [m.end() for m in _WORD.finditer(text)]


def split_prompt(text: str, n_words: int) -> tuple[str, str] | None:
    """(prompt, response) with the prompt ending right after word `n_words`; None when the
    review has no word left after it."""
    ends = word_ends(text)
    if len(ends) <= n_words:
        return None
    cut = ends[n_words - 1]
    return text[:cut], text[cut:]


def make_prompts(texts: Sequence[str], rng: random.Random, min_words: int,
                 max_words: int) -> list[str]:
    """One prompt per review (first k words, k uniform in [min_words, max_words], shortened
    when the review is short); distinct, in first-seen order."""
    prompts: dict[str, None] = {}
    for text in texts:
        n_words = len(word_ends(text))
        k = min(rng.randint(min_words, max_words), n_words - 1)
        if k < min_words:
            continue
        prompt, _ = split_prompt(text, k)
        prompts.setdefault(prompt, None)
    return list(prompts)


@dataclass(frozen=True)
class Group:
    """Several continuations of one prompt with their gold scores (of prompt + response)."""

    prompt: str
    responses: tuple[str, ...]
    golds: tuple[float, ...]
    source: str  # "corpus" (generated reviews) or "sft" (policy samples)

    def pairs(self) -> list[tuple[int, int]]:
        """Index pairs (i, j), i < j."""
        n = len(self.responses)
        return [(i, j) for i in range(n) for j in range(i + 1, n)]


def same_prefix_groups(texts: Sequence[str], golds: Sequence[float], n_groups: int,
                       size: int, rng: random.Random, min_words: int,
                       max_words: int) -> list[Group]:
    """Groups of `size` different reviews sharing their first k words (k uniform in
    [min_words, max_words]): `size` continuations of one prompt, each with its review's
    gold score. Returns fewer than `n_groups` when the texts share too few prefixes."""
    ends = [word_ends(t) for t in texts]
    by_prefix: dict[int, dict[str, list[int]]] = {}
    for k in range(min_words, max_words + 1):
        members: dict[str, list[int]] = defaultdict(list)
        for i, (text, e) in enumerate(zip(texts, ends)):
            if len(e) > k:
                members[text[: e[k - 1]]].append(i)
        by_prefix[k] = members
    groups: list[Group] = []
    attempts = 0
    while len(groups) < n_groups and attempts < 200 * n_groups + 1000:
        attempts += 1
        i = rng.randrange(len(texts))
        k = rng.randint(min_words, max_words)
        if len(ends[i]) <= k:
            continue
        prompt = texts[i][: ends[i][k - 1]]
        members_k = by_prefix[k][prompt]
        if len(members_k) < size:
            continue
        chosen = [i] + rng.sample([j for j in members_k if j != i], size - 1)
        cut = len(prompt)
        groups.append(Group(prompt, tuple(texts[j][cut:] for j in chosen),
                            tuple(golds[j] for j in chosen), "corpus"))
    return groups
