"""The HTTP pairwise judge (dpolab.http_judge).

A scripted stdlib server checks the retry policy (429, 503 and a timeout retried, 400 not), that
the API key never shows, and the parsing of replies. (A real vLLM server: tests/e2e/test_http_judge.py.)"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dpolab.errors import ConfigError
from dpolab.http_judge import (
    ALPACA_PAIRWISE_TEMPLATE,
    ALPACA_SYSTEM_PROMPT,
    HTTPPairwiseJudge,
    JudgeUnavailable,
    check_endpoint,
    read_cache,
    verdict_from_reply,
)
from dpolab.judges import DEFAULT_PAIRWISE_LABELS, check_template
from helpers.services import free_port

FAKE_KEY = "sk-dpolab-FAKE-KEY-7f3c9e1d2b84"
KEY_ENV = "DPOLAB_TEST_JUDGE_KEY"


# ---- a scripted OpenAI-compatible server (the retry policy, the key, the parsing) --------------
def reply(token: str = "1", tops=None, text: str | None = None) -> dict:
    """A chat completion with one generated token and its top logprobs."""
    tops = tops if tops is not None else [(token, -0.1), ("x", -3.0)]
    top = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in tops]
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "judge",
        "choices": [
            {
                "index": 0,
                "finish_reason": "length",
                "message": {"role": "assistant", "content": token if text is None else text},
                "logprobs": {
                    "content": [
                        {
                            "token": token,
                            "logprob": tops[0][1] if tops else -1.0,
                            "bytes": list(token.encode()),
                            "top_logprobs": top,
                        }
                    ]
                },
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
    }


class Scripted:
    """A stdlib HTTP server in a thread: each POST takes the next scripted answer, (status,
    JSON body, headers) or ("sleep", seconds) to answer too late; GET /v1/models lists
    `models`. Every request is recorded (path, headers, JSON body)."""

    def __init__(self, script=(), models=("judge",), default=None, get_answer=None):
        self.script, self.models, self.default, self.requests = list(script), list(models), default, []
        self.get_answer = get_answer  # what GET /v1/models answers instead of the list (e.g. a 401)
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body, headers=None):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:  # a client that gave up
                    pass

            def do_GET(self):
                scripted.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, None))
                if scripted.get_answer is not None:
                    return self._send(*scripted.get_answer)
                self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in scripted.models]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                scripted.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                answer = scripted.script.pop(0) if scripted.script else scripted.default
                if answer[0] == "sleep":
                    time.sleep(answer[1])
                    answer = (200, reply("2"))
                status, body, *headers = answer
                self._send(status, body, *headers)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    @property
    def posts(self) -> list:
        return [r for r in self.requests if r[2] is not None]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def error(status: int, message: str = "nope", **headers) -> tuple:
    return (status, {"error": {"message": message, "type": "error", "code": status}}, headers)


def test_429_503_and_a_timeout_are_retried_with_backoff_then_the_verdict_comes(tmp_path):
    """The openai client's retry policy, as the judge relies on it: 429, 5xx and timeouts are
    retried (with exponential backoff: 0.5 s, 1 s, 2 s, less jitter), and the request then
    succeeds."""
    with Scripted([("sleep", 2.0), error(429, "slow down"), error(503, "loading"), (200, reply("1"))]) as server:
        judge = HTTPPairwiseJudge("h", server.url, "judge", max_retries=3, timeout=0.5, max_concurrency=1)
        started = time.monotonic()
        assert judge.verdicts(["p"], ["a"], ["b"]) == ["first"]
        took = time.monotonic() - started
    assert len(server.posts) == 4 and judge.requests_sent == 1
    assert took >= 0.5 + (0.5 + 1.0 + 2.0) * 0.75  # the timeout, then three backoffs of at least 75 %
    sent = server.posts[-1][2]
    assert sent["messages"][0] == {"role": "system", "content": ALPACA_SYSTEM_PROMPT}
    assert sent["messages"][1]["role"] == "user" and "# Output (2):\nb" in sent["messages"][1]["content"]
    settings = [sent[k] for k in ("temperature", "max_tokens", "logprobs", "top_logprobs", "seed")]
    assert settings == [0, 1, True, 20, 0]


def test_a_400_is_not_retried_and_a_persistent_503_names_the_retries(tmp_path):
    with Scripted([error(400, "top_logprobs too large")]) as server:
        judge = HTTPPairwiseJudge("h", server.url, "judge", max_retries=3, timeout=5, max_concurrency=1)
        with pytest.raises(JudgeUnavailable, match=r"judges\.h: .* HTTP 400 \(not retried.*top_logprobs too large"):
            judge.verdicts(["p"], ["a"], ["b"])
        assert len(server.posts) == 1
    with Scripted(default=error(503, "overloaded", **{"retry-after-ms": "10"})) as server:
        judge = HTTPPairwiseJudge("h", server.url, "judge", max_retries=2, timeout=5, cache_path=tmp_path / "c.jsonl")
        with pytest.raises(JudgeUnavailable, match=r"HTTP 503 after 2 retries: overloaded\. 0 verdicts are cached"):
            judge.verdicts(["p"], ["a"], ["b"])
        assert len(server.posts) == 3


def test_nothing_listening_is_judge_unavailable_naming_the_url():
    url = f"http://127.0.0.1:{free_port()}/v1"
    judge = HTTPPairwiseJudge("offline", url, "judge", max_retries=1, timeout=2)
    with pytest.raises(JudgeUnavailable) as caught:
        judge.compare(["p"], ["a"], ["b"])
    message = str(caught.value)
    assert f"judges.offline: the judge server at {url}" in message and "connection refused (after 1 retries)" in message
    assert "no cache_path is set" in message


def test_the_api_key_is_sent_but_never_shown(tmp_path, monkeypatch):
    """The key travels in the Authorization header only: not in the exception (even when the
    server echoes it), the repr, vars() nor the cache file."""
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)
    cache = tmp_path / "cache.jsonl"
    refused = error(401, f"Incorrect API key provided: {FAKE_KEY}")
    with Scripted([(200, reply("1")), (200, reply("2"))], default=refused, get_answer=refused) as server:
        judge = HTTPPairwiseJudge(
            "keyed", server.url, "judge", api_key_env=KEY_ENV, cache_path=cache, max_concurrency=1
        )
        judge.compare(["p"], ["a"], ["b"])
        assert server.posts[0][1]["authorization"] == f"Bearer {FAKE_KEY}"
        with pytest.raises(JudgeUnavailable) as caught:
            judge.compare(["q"], ["a"], ["b"])
        with pytest.raises(ConfigError) as refused_check:
            judge.check()
    message = str(caught.value)
    assert f"HTTP 401: the API key in ${KEY_ENV} was refused" in message and "2 verdicts are cached" in message
    assert "refused the API key" in str(refused_check.value)
    shown_anywhere = (
        message,
        str(refused_check.value),
        repr(caught.value),
        repr(judge),
        repr(vars(judge)),
        cache.read_text(),
    )
    for shown in shown_anywhere:
        assert FAKE_KEY not in shown and FAKE_KEY[-10:] not in shown
    assert KEY_ENV in repr(judge)  # the variable's name is fine to show


def test_a_missing_key_variable_is_a_config_error(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(ConfigError, match=rf"judges\.remote\.api_key_env: the environment variable {KEY_ENV} is unset"):
        HTTPPairwiseJudge("remote", "http://127.0.0.1:9/v1", "judge", api_key_env=KEY_ENV)
    monkeypatch.setenv(KEY_ENV, "")
    with pytest.raises(ConfigError, match=rf"{KEY_ENV} is unset or empty"):
        HTTPPairwiseJudge("remote", "http://127.0.0.1:9/v1", "judge", api_key_env=KEY_ENV)


def test_a_truncated_last_cache_line_is_skipped_and_the_next_entry_still_parses(tmp_path):
    cache = tmp_path / "cache.jsonl"
    with Scripted(default=(200, reply("1"))) as server:
        judge = HTTPPairwiseJudge("h", server.url, "judge", cache_path=cache)
        judge.verdicts(["p1", "p2"], ["a", "a"], ["b", "b"])
        assert len(server.posts) == 2
        lines = cache.read_text().splitlines()
        cache.write_text(lines[0] + "\n" + lines[1][:25])  # the second verdict cut short by a dead run
        assert len(read_cache(cache)) == 1
        again = HTTPPairwiseJudge("h", server.url, "judge", cache_path=cache)
        assert again.verdicts(["p1", "p2"], ["a", "a"], ["b", "b"]) == ["first", "first"]
        assert (again.cache_hits, again.requests_sent) == (1, 1)
    assert len(read_cache(cache)) == 2  # the new entry went on a line of its own


def test_verdicts_from_logprobs_text_or_unparsed():
    labels = dict(DEFAULT_PAIRWISE_LABELS)
    # the argmax among the label tokens, wherever they rank among the other tokens
    assert verdict_from_reply([("The", -0.1), ("2", -2.0), ("1", -2.5)], "The", labels) == ("second", "logprobs")
    assert verdict_from_reply([("\n", -0.2), ("0", -4.0)], "\n", labels) == ("tie", "logprobs")
    # a token spelled exactly as a label beats one equal to a label only once stripped
    assert verdict_from_reply([(" 1", -0.1), ("2", -1.0)], " 1", labels) == ("second", "logprobs")
    assert verdict_from_reply([(" 1", -0.1), ("x", -1.0)], " 1", labels) == ("first", "logprobs")
    # no label among the top logprobs (or none sent): the reply text, stripped, if it is a label
    assert verdict_from_reply([("x", -0.1)], " 2\n", labels) == ("second", "text")
    assert verdict_from_reply([], "0", labels) == ("tie", "text")
    assert verdict_from_reply([("x", -0.1)], "Output (1)", labels) == (None, "unparsed")
    custom = {"first": "A", "second": "B", "tie": "C"}
    assert verdict_from_reply([("B", -1.0), ("A", -1.5)], "B", custom) == ("second", "logprobs")


def test_unparsed_replies_are_ties_and_counted(tmp_path):
    script = [(200, reply("1")), (200, reply("Hmm", tops=[("Hmm", -0.1)])), (200, reply("x", tops=[], text=" 2 "))]
    with Scripted(script) as server:
        judge = HTTPPairwiseJudge("h", server.url, "judge", max_concurrency=1, cache_path=tmp_path / "c.jsonl")
        assert judge.verdicts(["p1", "p2", "p3"], ["a"] * 3, ["b"] * 3) == ["first", "tie", "second"]
        assert judge.unparsed == 1
        cached = HTTPPairwiseJudge("h", server.url, "judge", cache_path=tmp_path / "c.jsonl")
        assert cached.verdicts(["p2"], ["a"], ["b"]) == ["tie"] and cached.unparsed == 1 and cached.requests_sent == 0


def test_an_empty_system_prompt_sends_the_user_message_alone_and_templates_are_checked():
    judge = HTTPPairwiseJudge("h", "http://127.0.0.1:9/v1", "m", system_prompt="")
    assert [m["role"] for m in judge.messages("p", "a", "b")] == ["user"]
    check_template(ALPACA_PAIRWISE_TEMPLATE, "template")
    with pytest.raises(ConfigError, match=r"judges\.h\.template: .*missing \['second'\]"):
        HTTPPairwiseJudge("h", "http://127.0.0.1:9/v1", "m", template="{prompt} {first}")
    with pytest.raises(ConfigError, match=r"judges\.h\.labels: the three labels must be distinct"):
        HTTPPairwiseJudge("h", "http://127.0.0.1:9/v1", "m", labels={"first": "2"})


def test_the_cache_key_is_the_judge_and_the_pair_not_the_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)
    keyed = HTTPPairwiseJudge("a", "http://h:1/v1/", "m", api_key_env=KEY_ENV)
    plain = HTTPPairwiseJudge("b", "http://h:1/v1", "m")
    assert keyed.cache_key("p", "x", "y") == plain.cache_key("p", "x", "y")  # the key and the name are not part of it
    assert plain.cache_key("p", "x", "y") != plain.cache_key("p", "y", "x")
    for other in (
        HTTPPairwiseJudge("b", "http://h:2/v1", "m"),
        HTTPPairwiseJudge("b", "http://h:1/v1", "m2"),
        HTTPPairwiseJudge("b", "http://h:1/v1", "m", system_prompt="You judge."),
        HTTPPairwiseJudge("b", "http://h:1/v1", "m", labels={"tie": "3"}),
    ):
        assert other.cache_key("p", "x", "y") != plain.cache_key("p", "x", "y")


def test_check_endpoint_without_a_vllm(monkeypatch):
    with Scripted(models=["a", "b"]) as server:
        check_endpoint(server.url, "b")
        with pytest.raises(ConfigError, match=r"judges\.j\.model: 'c' is not served at .*; it serves: \['a', 'b'\]"):
            check_endpoint(server.url, "c", where="judges.j")
    with Scripted(get_answer=error(401)) as server:
        with pytest.raises(ConfigError, match=r"HTTP 401: it wants an API key: set judges\.<name>\.api_key_env"):
            check_endpoint(server.url, "judge")

    class Html(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"<html>a dashboard</html>")

    html = ThreadingHTTPServer(("127.0.0.1", 0), Html)
    threading.Thread(target=html.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ConfigError, match=r"answered, but not as an OpenAI-compatible API"):
            check_endpoint(f"http://127.0.0.1:{html.server_address[1]}/v1", "m")
    finally:
        html.shutdown()
        html.server_close()


def test_the_module_imports_no_heavy_library():
    import subprocess
    import sys

    code = (
        "import sys, dpolab.http_judge; heavy = [m for m in ('torch', 'openai', 'vllm', 'transformers', 'httpx2') "
        "if m in sys.modules]; print(heavy)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
