"""The llm judge against a real HTTP server on loopback that answers in the OpenAI format."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from omegaconf import OmegaConf

from red_cli.config.schema_eval import LLMJudgeConfig
from red_cli.eval.judges import JudgeError, LLMJudge

KEY = "sk-test-not-a-real-key-5b1f"


class FakeChat:
    """What the server saw and how it answers: prefers the response that says 'good'."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.auth: list[str | None] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.status = 200
        self.delay = 0.0

    def answer(self, user: str) -> str | bytes:
        a = user.split("Response A: ")[1].split("\n")[0]
        b = user.split("Response B: ")[1].split("\n")[0]
        if "MALFORMED" in a:
            return "Hmm, hard to say."
        if "NOTJSON" in a:
            return b"<html>oops</html>"
        return "A" if "good" in a else ("B" if "good" in b else "A")


def serve(chat: FakeChat):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with chat.lock:
                chat.requests.append(body)
                chat.auth.append(self.headers.get("Authorization"))
                chat.in_flight += 1
                chat.max_in_flight = max(chat.max_in_flight, chat.in_flight)
            time.sleep(chat.delay)
            with chat.lock:
                chat.in_flight -= 1
            if chat.status != 200:
                self.send_response(chat.status)
                self.end_headers()
                self.wfile.write(b'{"error": {"message": "nope"}}')
                return
            reply = chat.answer(body["messages"][-1]["content"])
            if isinstance(reply, bytes):
                payload = reply
            else:
                payload = json.dumps({
                    "id": "x", "object": "chat.completion", "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": reply}}],
                }).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


@pytest.fixture
def chat():
    chat = FakeChat()
    server = serve(chat)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    chat.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield chat
    server.shutdown()
    server.server_close()


def _cfg(url: str, **kw):
    cfg = OmegaConf.structured(LLMJudgeConfig)
    cfg.base_url, cfg.model = url, "judge-model"
    cfg.user_template = "Prompt: {prompt}\nResponse A: {response_a}\nResponse B: {response_b}\nA or B?"
    cfg.api_key_env = "RED_TEST_JUDGE_KEY"
    cfg.backoff_s = 0.01
    for k, v in kw.items():
        cfg[k] = v
    return cfg


def test_both_orders_asked_and_combined(chat, monkeypatch):
    monkeypatch.setenv("RED_TEST_JUDGE_KEY", KEY)
    judge = LLMJudge(_cfg(chat.url))
    verdicts = judge.compare([("p1", "good one", "bad one"), ("p2", "bad one", "good one"),
                              ("p3", "meh", "meh")])
    assert [v.outcome for v in verdicts] == [1.0, 0.0, 0.5]  # p3: always "A" -> tie
    assert all(v.malformed == 0 for v in verdicts)
    assert len(chat.requests) == 6
    shown = {(r["messages"][-1]["content"].split("Response A: ")[1].split("\n")[0],
              r["messages"][-1]["content"].split("Response B: ")[1].split("\n")[0])
             for r in chat.requests if "Prompt: p1" in r["messages"][-1]["content"]}
    assert shown == {("good one", "bad one"), ("bad one", "good one")}
    assert all(r["model"] == "judge-model" and r["temperature"] == 0.0 for r in chat.requests)
    assert set(chat.auth) == {f"Bearer {KEY}"}
    # The key is read from the environment when sending, never kept on the judge.
    assert KEY not in repr(vars(judge))


def test_malformed_replies_are_counted_not_fatal(chat):
    judge = LLMJudge(_cfg(chat.url))
    verdicts = judge.compare([("p", "MALFORMED good", "other"), ("q", "NOTJSON", "NOTJSON"),
                              ("r", "good", "bad")])
    # p: order 1 is malformed, order 2 (baseline first) says B = the candidate.
    assert verdicts[0].malformed == 1 and verdicts[0].outcome == 1.0
    assert verdicts[0].answers[0] == "Hmm, hard to say."
    assert verdicts[1].malformed == 2 and verdicts[1].outcome is None
    assert verdicts[2].malformed == 0 and verdicts[2].outcome == 1.0


def test_concurrency_is_bounded(chat):
    chat.delay = 0.05
    judge = LLMJudge(_cfg(chat.url, concurrency=3))
    judge.compare([(f"p{i}", "good", "bad") for i in range(6)])
    assert len(chat.requests) == 12
    assert 1 < chat.max_in_flight <= 3


def test_server_errors_are_retried_then_fail_clearly(chat):
    chat.status = 503
    sleeps: list[float] = []
    judge = LLMJudge(_cfg(chat.url, max_retries=2, concurrency=1), sleep=sleeps.append)
    with pytest.raises(JudgeError, match=r"after 3 attempts.*HTTP 503"):
        judge.compare([("p", "a", "b")])
    assert sleeps[:2] == [0.01, 0.02]  # exponential backoff
    assert len(chat.requests) >= 3


def test_refused_request_is_not_retried_and_hides_the_key(chat, monkeypatch):
    monkeypatch.setenv("RED_TEST_JUDGE_KEY", KEY)
    chat.status = 401
    judge = LLMJudge(_cfg(chat.url, max_retries=5, concurrency=1))
    with pytest.raises(JudgeError, match="HTTP 401") as err:
        judge.ask("p", "a", "b")
    assert len(chat.requests) == 1
    assert KEY not in str(err.value)


def test_unreachable_endpoint_fails_after_bounded_retries():
    with socket.socket() as s:  # bound and never listening: nobody else can take the port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        judge = LLMJudge(_cfg(f"http://127.0.0.1:{port}/v1", max_retries=2, timeout_s=2.0))
        start = time.perf_counter()
        with pytest.raises(JudgeError, match=rf"no answer from http://127.0.0.1:{port}/v1/chat/"
                                             r"completions after 3 attempts"):
            judge.compare([("p", "a", "b")])
        assert time.perf_counter() - start < 5


def test_check_fails_before_sampling_and_names_the_unset_key(chat, monkeypatch):
    """A refusing endpoint (HTTP 401) ends at the check, naming the unset key variable."""
    monkeypatch.delenv("RED_TEST_JUDGE_KEY", raising=False)
    chat.status = 401
    with pytest.raises(JudgeError, match=r"HTTP 401.*\$RED_TEST_JUDGE_KEY is not set"):
        LLMJudge(_cfg(chat.url, max_retries=0)).check()
    assert len(chat.requests) == 1


def test_the_question_fills_the_template(chat, monkeypatch):
    monkeypatch.setenv("RED_TEST_JUDGE_KEY", KEY)
    template = "{question}\nPrompt: {prompt}\nResponse A: {response_a}\nResponse B: {response_b}"
    judge = LLMJudge(_cfg(chat.url, user_template=template, question="Which is kinder?"))
    judge.ask("p", "a", "b")
    content = chat.requests[-1]["messages"][1]["content"]
    assert content == "Which is kinder?\nPrompt: p\nResponse A: a\nResponse B: b"
