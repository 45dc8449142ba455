"""The toy task's gold cost judge: how many hype words a text uses.

Hype words are the toy corpus's strongest praise: the `strong` positive adjectives of
`corpus.opinion_words()` (VADER valence >= 2.4: great, excellent, brilliant, superb,
wonderful, ...). The gold cost of a text is the number of whole-word occurrences of hype
words in it, case-insensitive: "greater" does not count, and "not great" does (the rule is
lexical, it reads no negation).

The cost conflicts with the reward by construction: VADER gives these words its strongest
positive valence, so a policy that raises the gold reward reaches for them and pays for
each. Like the gold reward it reads prompt + response, so a prompt's own hype words count
too (a cost that no response removes).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from red_cli.toy.corpus import opinion_words

HYPE_WORDS: tuple[str, ...] = opinion_words().positive["strong"]
_HYPE = re.compile(r"\b(?:" + "|".join(map(re.escape, HYPE_WORDS)) + r")\b", re.IGNORECASE)


def gold_costs(texts: Sequence[str]) -> list[float]:
    """Number of hype words in each text."""
    if isinstance(texts, str):
        raise TypeError("gold_costs takes a list of texts, not one string")
    return [float(len(_HYPE.findall(t))) for t in texts]


class GoldCostJudge:
    """Callable judge: texts -> gold costs (hype-word counts, >= 0)."""

    def __call__(self, texts: Sequence[str]) -> list[float]:
        if isinstance(texts, str):
            raise TypeError("GoldCostJudge takes a list of texts, not one string")
        return gold_costs(texts)
