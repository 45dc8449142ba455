"""Judges for `red eval`: who decides whether the candidate's response beats the baseline's.

Two kinds:

- score judges give every response a number, and the larger number wins the pair:
  ``gold`` (the toy world's VADER compound of prompt + response) and ``reward_model`` (any
  reward-model preset's sequence score, read through the same pipeline training uses);
- the pairwise ``llm`` judge asks an OpenAI-compatible chat-completions endpoint which of
  two responses is better, once with the candidate shown first and once with the baseline
  first, so a judge that prefers whichever comes first ends in a tie rather than a win.

Every judge implements one method, :meth:`Judge.judge`, on a :class:`Pairs` batch. Build
one with :func:`build_judge` from the composed ``judge`` node.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from red_cli.errors import JudgeError
from red_cli.eval.stats import outcome_from_scores

log = logging.getLogger("red")

JUDGE_KINDS = ("gold", "reward_model", "llm")
# The llm judge's question when neither judge.question nor the run's dataset.judge_question
# says what "better" means.
DEFAULT_QUESTION = "Two responses answer the same prompt. Which one is better?"


@dataclass
class Pairs:
    """One batch of pairs to judge: the same prompts answered by both sides.

    candidate / baseline: each side's Rollout; *_tokenizer: the policy tokenizer that
    produced it (the sides may tokenise differently); same[i]: the two responses to prompt i
    are the same text, which every judge calls a tie without asking anyone.
    """

    prompts: list[str]
    candidate: Any
    candidate_tokenizer: Any
    baseline: Any
    baseline_tokenizer: Any
    same: list[bool]


class Judge(Protocol):
    """Decides each pair of a :class:`Pairs` batch. ``judge`` returns one dict per pair with
    at least ``outcome`` (1 candidate wins, 0 baseline wins, 0.5 tie, None unreadable) and
    whatever else the judge records (scores, raw answers); `red eval` stores them as they are.
    ``check`` runs before any sampling and raises JudgeError if the judge cannot work."""

    def check(self) -> None: ...

    def judge(self, pairs: Pairs) -> list[dict]: ...


def judge_label(judge_cfg: Any) -> str:
    """Short name of a judge for directory names: gold, rm-<preset>, llm-<model>."""
    from red_cli.eval.sides import slug

    if judge_cfg.kind == "reward_model":
        return "rm-" + slug(judge_cfg.preset if judge_cfg.path is None else Path(judge_cfg.path).name)
    if judge_cfg.kind == "llm":
        return "llm-" + slug(judge_cfg.model)
    return judge_cfg.kind


# --------------------------------------------------------------------------- score judges


class ScoreJudge:
    """A judge that gives every response a number; the larger wins by more than ``tie_margin``."""

    def __init__(self, tie_margin: float = 0.0):
        self.tie_margin = tie_margin

    def score(self, rollout, policy_tokenizer) -> list[float]:
        raise NotImplementedError

    def check(self) -> None:
        """A score judge is ready once built (its model loaded)."""

    def judge(self, pairs: Pairs) -> list[dict]:
        cs = self.score(pairs.candidate, pairs.candidate_tokenizer)
        bs = self.score(pairs.baseline, pairs.baseline_tokenizer)
        return [{"candidate_score": c, "baseline_score": b,
                 "outcome": 0.5 if same else outcome_from_scores(c, b, self.tie_margin)}
                for c, b, same in zip(cs, bs, pairs.same)]


class GoldScoreJudge(ScoreJudge):
    """VADER compound of prompt + response, as the training loop's `objective/gold`."""

    def __init__(self, tie_margin: float = 0.0) -> None:
        super().__init__(tie_margin)
        from red_cli.toy.judge import GoldJudge

        self._judge = GoldJudge()

    def score(self, rollout, policy_tokenizer) -> list[float]:
        return self._judge([p + r for p, r in zip(rollout.prompts, rollout.responses)])


class ModelScores:
    """A reward (or cost) model's sequence score of each response, read as `red train` reads
    it (any tokenizer pair), unshaped. ``key`` names the config key of its path in errors."""

    def __init__(self, rm_cfg: Any, toy_cfg: Any, device: str, key: str):
        from red_cli.reward.stack import load_reward_stack

        self.rm = load_reward_stack(rm_cfg, toy_cfg, device, key=key)
        self._pipelines: dict[int, Any] = {}

    def __call__(self, rollout, policy_tokenizer) -> list[float]:
        from red_cli.reward.pipeline import RewardPipeline
        from red_cli.reward.shaping import ScoreShaper

        # One pipeline per policy tokenizer: the two sides may tokenise differently.
        key = id(policy_tokenizer)
        if key not in self._pipelines:
            self._pipelines[key] = RewardPipeline(self.rm, policy_tokenizer)
        scored = self._pipelines[key](rollout, ScoreShaper("none", None, None), 1)
        return scored.raw_scores.tolist()


class RewardModelJudge(ScoreJudge):
    """A reward model's sequence score r_C (:class:`ModelScores`)."""

    def __init__(self, rm_cfg: Any, toy_cfg: Any, device: str, tie_margin: float = 0.0):
        super().__init__(tie_margin)
        self.scores = ModelScores(rm_cfg, toy_cfg, device, key="judge.path")

    def score(self, rollout, policy_tokenizer) -> list[float]:
        return self.scores(rollout, policy_tokenizer)


def load_rm_preset(preset: str, path: str | None = None) -> Any:
    """conf/reward_model/<preset>.yaml merged onto its schema (a typo there fails here)."""
    from red_cli.config import load_preset
    from red_cli.config.schema import RewardModelConfig

    try:
        cfg = load_preset("reward_model", preset, RewardModelConfig)
    except ValueError as err:
        raise JudgeError(str(err)) from None
    if path is not None:
        cfg.path = path
    return cfg


# --------------------------------------------------------------------------- llm judge


@dataclass
class PairVerdict:
    """The llm judge's decision on one pair.

    outcome: 1 candidate wins, 0 baseline wins, 0.5 tie (the two orders disagree), None when
        no answer could be read.
    answers: the raw reply of each order (candidate first, then baseline first).
    malformed: how many of the two replies were not a readable A or B.
    """

    outcome: float | None
    answers: list[str | None]
    malformed: int


# A reply is read as A or B when it starts with the letter, optionally decorated
# ("**A**", "(B)", "Response A."); "a better one..." is not an answer.
_ANSWER = re.compile(r"^[\s*\"'(\[]*(?:(?i:response)\s*)?([AB])(?![A-Za-z])")


def parse_answer(text: str | None) -> str | None:
    """'A', 'B' or None (malformed)."""
    if text is None:
        return None
    m = _ANSWER.match(text)
    return m.group(1) if m else None


def combine_orders(first: str | None, second: str | None) -> float | None:
    """Candidate preference from the two orders' answers (module docstring).

    ``first``: answer with the candidate as A; ``second``: with the baseline as A. Readable
    answers vote 1 (candidate) or 0 (baseline); the outcome is their mean, so a judge that
    always says A gives 0.5, a tie.
    """
    votes = []
    if first is not None:
        votes.append(1.0 if first == "A" else 0.0)
    if second is not None:
        votes.append(1.0 if second == "B" else 0.0)
    return sum(votes) / len(votes) if votes else None


class _Retryable(Exception):
    pass


class LLMJudge:
    """Pairwise judge behind ``{base_url}/chat/completions`` (OpenAI wire format)."""

    def __init__(self, judge_cfg: Any, sleep: Callable[[float], None] = time.sleep):
        self.url = judge_cfg.base_url.rstrip("/") + "/chat/completions"
        self.model = judge_cfg.model
        self.api_key_env = judge_cfg.api_key_env
        self.system_prompt = judge_cfg.system_prompt
        self.user_template = judge_cfg.user_template
        # What "better" means for this task (README: the judging question of each dataset).
        self.question = judge_cfg.get("question") or DEFAULT_QUESTION
        self.temperature = judge_cfg.temperature
        self.max_tokens = judge_cfg.max_tokens
        self.concurrency = judge_cfg.concurrency
        self.max_retries = judge_cfg.max_retries
        self.backoff_s = judge_cfg.backoff_s
        self.timeout_s = judge_cfg.timeout_s
        self._sleep = sleep
        # Set when a request has failed for good: the requests still queued give up at once.
        self._failed = threading.Event()

    def check(self) -> None:
        """One small request before any sampling, so a wrong URL, model or missing key ends at
        once with one line, not after every response of the evaluation has been generated."""
        if not os.environ.get(self.api_key_env):
            log.warning("judge.api_key_env=%s is not set: requests go without an API key",
                        self.api_key_env)
        try:
            self.ask("Say A.", "A", "B")
        except JudgeError as err:
            unset = "" if os.environ.get(self.api_key_env) else (
                f" (${self.api_key_env} is not set: export it, or name another variable with "
                "judge.api_key_env=...)")
            raise JudgeError(f"{err}{unset}") from None
        finally:
            self._failed.clear()

    def _key(self) -> str | None:
        # Read at request time, never stored on the object (which may be logged or pickled).
        return os.environ.get(self.api_key_env) or None

    def _scrub(self, text: str) -> str:
        key = self._key()
        return text.replace(key, "***") if key else text

    def _request_once(self, body: bytes) -> str | None:
        headers = {"Content-Type": "application/json"}
        key = self._key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            detail = self._scrub(err.read()[:300].decode("utf-8", "replace"))
            if err.code == 429 or err.code >= 500:
                raise _Retryable(f"HTTP {err.code}: {detail}") from err
            raise JudgeError(f"llm judge: {self.url} refused the request with HTTP {err.code} "
                             f"(check judge.model={self.model!r} and ${self.api_key_env}): "
                             f"{detail}") from err
        except (urllib.error.URLError, TimeoutError, ConnectionError,
                http.client.HTTPException) as err:
            raise _Retryable(f"{type(err).__name__}: {getattr(err, 'reason', err)}") from err
        return _reply_content(raw)

    def ask(self, prompt: str, response_a: str, response_b: str) -> str | None:
        """One chat completion; its content, or None when the reply is not in OpenAI format.

        Connection errors, timeouts, HTTP 429 and 5xx are retried ``max_retries`` times with
        exponential backoff; then :class:`JudgeError`.
        """
        user = self.user_template.format(prompt=prompt, response_a=response_a,
                                         response_b=response_b, question=self.question)
        body = json.dumps({
            "model": self.model,
            "messages": [{"role": "system", "content": self.system_prompt},
                         {"role": "user", "content": user}],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }).encode()
        delay, last = self.backoff_s, ""
        for attempt in range(self.max_retries + 1):
            if self._failed.is_set():
                raise JudgeError("llm judge: stopped after another request failed")
            try:
                return self._request_once(body)
            except _Retryable as err:
                last = str(err)
                if attempt < self.max_retries:
                    log.warning("llm judge: %s (attempt %d of %d); retrying in %.1fs", last,
                                attempt + 1, self.max_retries + 1, delay)
                    self._sleep(delay)
                    delay *= 2
            except JudgeError:
                self._failed.set()
                raise
        self._failed.set()
        raise JudgeError(f"llm judge: no answer from {self.url} after {self.max_retries + 1} "
                         f"attempts ({last}); check judge.base_url, or raise judge.max_retries")

    def compare(self, pairs: Sequence[tuple[str, str, str]]) -> list[PairVerdict]:
        """(prompt, candidate, baseline) pairs -> verdicts; 2 requests per pair, in parallel."""
        jobs = []
        for prompt, cand, base in pairs:
            jobs.append((prompt, cand, base))  # candidate shown as A
            jobs.append((prompt, base, cand))  # baseline shown as A
        self._failed.clear()
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = [pool.submit(self.ask, *job) for job in jobs]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in futures if f in done and f.exception() is not None]
            if failed:
                # The earliest failure is the real one; the others stopped because of it.
                for f in futures:
                    f.cancel()
                raise failed[0].exception()
            replies = [f.result() for f in futures]
        verdicts = []
        for k in range(len(pairs)):
            answers = replies[2 * k:2 * k + 2]
            parsed = [parse_answer(a) for a in answers]
            verdicts.append(PairVerdict(combine_orders(*parsed), answers,
                                        sum(p is None for p in parsed)))
        return verdicts

    def judge(self, pairs: Pairs) -> list[dict]:
        """Asks about every pair whose responses differ (identical texts tie unasked)."""
        rows = [{"answers": [None, None], "malformed": 0, "outcome": 0.5} for _ in pairs.prompts]
        ask = [j for j, same in enumerate(pairs.same) if not same]
        verdicts = self.compare([(pairs.prompts[j], pairs.candidate.responses[j],
                                  pairs.baseline.responses[j]) for j in ask]) if ask else []
        for j, v in zip(ask, verdicts):
            rows[j].update(answers=v.answers, malformed=v.malformed, outcome=v.outcome)
        return rows


def _reply_content(raw: bytes) -> str | None:
    try:
        content = json.loads(raw)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None


# --------------------------------------------------------------------------- factory


def build_judge(judge_cfg: Any, toy_cfg: Any, device: str, tie_margin: float = 0.0) -> Judge:
    """The judge the composed ``judge`` node describes (kinds: JUDGE_KINDS)."""
    if judge_cfg.kind == "gold":
        return GoldScoreJudge(tie_margin)
    if judge_cfg.kind == "reward_model":
        return RewardModelJudge(load_rm_preset(judge_cfg.preset, judge_cfg.path), toy_cfg, device,
                                tie_margin)
    if judge_cfg.kind == "llm":
        return LLMJudge(judge_cfg)
    raise JudgeError(f"judge.kind={judge_cfg.kind!r}; valid kinds: {', '.join(JUDGE_KINDS)}")
