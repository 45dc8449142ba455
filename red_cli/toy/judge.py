"""The toy task's gold judge: VADER's compound sentiment score of prompt + response.

VADER (Hutto & Gilbert, ICWSM 2014) is a lexicon-and-rules sentiment scorer; its
`compound` is a normalised sum of word valences in [-1, 1] (> 0.05 positive, < -0.05
negative by VADER's own convention). The toy reward models are trained to agree with it,
so `red eval` and the per-iteration `objective/gold` metric use it as ground truth.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence


class GoldJudge:
    """Callable judge: texts -> VADER compound scores in [-1, 1]."""

    def __init__(self) -> None:
        # vaderSentiment imports `requests` at import time: keep it out of module import.
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._analyzer = SentimentIntensityAnalyzer()

    def __call__(self, texts: Sequence[str]) -> list[float]:
        if isinstance(texts, str):
            raise TypeError("GoldJudge takes a list of texts, not one string")
        return [float(self._analyzer.polarity_scores(t)["compound"]) for t in texts]


@functools.cache
def _judge() -> GoldJudge:
    return GoldJudge()


def gold_scores(texts: Sequence[str]) -> list[float]:
    """VADER compound of each text (a process-wide analyser, built on first use)."""
    return _judge()(texts)
