"""The HTTP pairwise judge (dpolab.http_judge).

Against a real vLLM OpenAI-compatible server of the tiny Llama (one server for the module,
dpolab.judge_server.VllmServer): verdicts in both orders, the cache (a second judge asks nothing), the
endpoint check, and a server that dies mid-run (JudgeUnavailable, the verdicts received kept,
a rerun on a restarted server asks only for the missing ones). The tiny model is random: its
replies are rarely a label, so most of its verdicts are unparsed ties; one test picks labels
among the server's own top tokens to read a verdict from real logprobs.

Without vLLM, a scripted stdlib server checks the retry policy (429, 503 and a timeout retried,
400 not), that the API key never shows, and the parsing of replies."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import free_port
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
from dpolab.judge_server import VllmServer

FAKE_KEY = "sk-dpolab-FAKE-KEY-7f3c9e1d2b84"
KEY_ENV = "DPOLAB_TEST_JUDGE_KEY"


# ---- a scripted OpenAI-compatible server (the retry policy, the key, the parsing) --------------
def reply(token: str = "1", tops=None, text: str | None = None) -> dict:
    """A chat completion with one generated token and its top logprobs."""
    tops = tops if tops is not None else [(token, -0.1), ("x", -3.0)]
    top = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in tops]
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "judge",
        "choices": [{"index": 0, "finish_reason": "length",
                     "message": {"role": "assistant", "content": token if text is None else text},
                     "logprobs": {"content": [{"token": token, "logprob": tops[0][1] if tops else -1.0,
                                               "bytes": list(token.encode()), "top_logprobs": top}]}}],
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
        judge = HTTPPairwiseJudge("keyed", server.url, "judge", api_key_env=KEY_ENV, cache_path=cache,
                                  max_concurrency=1)
        judge.compare(["p"], ["a"], ["b"])
        assert server.posts[0][1]["authorization"] == f"Bearer {FAKE_KEY}"
        with pytest.raises(JudgeUnavailable) as caught:
            judge.compare(["q"], ["a"], ["b"])
        with pytest.raises(ConfigError) as refused_check:
            judge.check()
    message = str(caught.value)
    assert f"HTTP 401: the API key in ${KEY_ENV} was refused" in message and "2 verdicts are cached" in message
    assert "refused the API key" in str(refused_check.value)
    shown_anywhere = (message, str(refused_check.value), repr(caught.value), repr(judge), repr(vars(judge)),
                      cache.read_text())
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
    for other in (HTTPPairwiseJudge("b", "http://h:2/v1", "m"), HTTPPairwiseJudge("b", "http://h:1/v1", "m2"),
                  HTTPPairwiseJudge("b", "http://h:1/v1", "m", system_prompt="You judge."),
                  HTTPPairwiseJudge("b", "http://h:1/v1", "m", labels={"tie": "3"})):
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

    code = ("import sys, dpolab.http_judge; heavy = [m for m in ('torch', 'openai', 'vllm', 'transformers', 'httpx2') "
            "if m in sys.modules]; print(heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# ---- a real vLLM server ------------------------------------------------------------------------
PAIRS = (
    ["This movie was", "The acting in this film", "I expected more from"],
    [" a delight from start to end.", " was wooden and dull.", " a director this good."],
    [" a waste of two hours.", " carried the weak plot.", " the sequel, honestly."],
)


class Live:
    """The module's server; the test that kills it puts a restarted one here."""

    server: VllmServer


@pytest.fixture(scope="module")
def live(vllm_model_dir, tmp_path_factory):
    holder = Live()
    holder.server = VllmServer(vllm_model_dir, max_model_len=512, work=tmp_path_factory.mktemp("vllm-server")).start()
    try:
        yield holder
    finally:
        holder.server.stop()


def judge_of(server: VllmServer, cache=None, **kwargs) -> HTTPPairwiseJudge:
    return HTTPPairwiseJudge("live", server.url, server.model, cache_path=cache, **kwargs)


@pytest.mark.e2e  # a real vLLM server (~30 s to start): the full suite, not test-unit
def test_check_endpoint_on_a_real_server(live):
    check_endpoint(live.server.url, live.server.model)
    with pytest.raises(ConfigError, match=r"judges\.live\.model: 'gpt-4o' is not served at .*; it serves: \['.*l'\]"):
        check_endpoint(live.server.url, "gpt-4o", where="judges.live")
    nowhere = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ConfigError, match=rf"judges\.<name>\.base_url: no server answers at {nowhere} .*refused.*"
                                          r"python -m vllm\.entrypoints\.openai\.api_server"):
        check_endpoint(nowhere, live.server.model)


@pytest.mark.e2e  # a real vLLM server (~30 s to start): the full suite, not test-unit
def test_real_server_verdicts_in_both_orders_and_a_second_judge_reads_the_cache(live, tmp_path):
    cache = tmp_path / "verdicts.jsonl"
    judge = judge_of(live.server, cache)
    result = judge.compare(*PAIRS)
    assert list(result.columns) == ["preference", "verdict_in_order", "verdict_swapped"] and len(result) == 3
    assert set(result["verdict_in_order"]) | set(result["verdict_swapped"]) <= {"first", "second", "tie"}
    assert set(result["preference"]) <= {0.0, 0.25, 0.5, 0.75, 1.0}
    assert (judge.requests_sent, judge.cache_hits) == (6, 0) and 0 <= judge.unparsed <= 6
    entries = [json.loads(line) for line in cache.read_text().splitlines()]
    assert len(entries) == 6 and {e["how"] for e in entries} <= {"logprobs", "text", "unparsed"}
    again = judge_of(live.server, cache)
    assert again.compare(*PAIRS).equals(result)
    assert (again.requests_sent, again.cache_hits, again.unparsed) == (0, 6, judge.unparsed)


@pytest.mark.e2e  # a real vLLM server (~30 s to start): the full suite, not test-unit
def test_real_server_verdict_read_from_the_top_logprobs(live):
    """Labels chosen among the server's own top tokens for a request: the verdict is the slot of
    the most likely one, read from real logprobs (the tiny model rarely says 1, 2 or 0)."""
    judge = judge_of(live.server)
    body = json.dumps({"model": live.server.model, "messages": judge.messages("Rate:", " good", " bad"),
                       "temperature": 0, "max_tokens": 1, "logprobs": True, "top_logprobs": 20, "seed": 0}).encode()
    request = urllib.request.Request(f"{live.server.url}/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        tops = json.load(response)["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    tokens = []
    for top in tops:  # distinct labels, none blank once stripped
        if top["token"].strip() and top["token"].strip() not in {t.strip() for t in tokens}:
            tokens.append(top["token"])
    labels = {"second": tokens[0], "tie": tokens[1], "first": tokens[2]}  # the most likely one in the second slot
    judge = judge_of(live.server, labels=labels)
    assert judge.verdicts(["Rate:"], [" good"], [" bad"]) == ["second"] and judge.unparsed == 0


@pytest.mark.e2e  # a real vLLM server (~30 s to start): the full suite, not test-unit
def test_the_server_dies_mid_run_and_a_rerun_asks_only_for_the_missing_verdicts(live, tmp_path):
    """Last in the module: it kills the module's server while a judge is working, then restarts
    one on the same port."""
    n = 100
    prompts = [f"Review {i}: the film" for i in range(n)]
    first = [f" was great, part {i}." for i in range(n)]
    second = [f" was dull, part {i}." for i in range(n)]
    cache = tmp_path / "verdicts.jsonl"
    judge = judge_of(live.server, cache, max_retries=1, timeout=5, max_concurrency=2)

    def kill_after_some_verdicts():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if cache.exists() and len(cache.read_text().splitlines()) >= 10:
                live.server.kill()
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_after_some_verdicts)
    killer.start()
    with pytest.raises(JudgeUnavailable) as caught:
        judge.compare(prompts, first, second)
    killer.join()
    cached = len(read_cache(cache))
    assert 10 <= cached < 2 * n
    message = str(caught.value)
    assert message.startswith(f"judges.live: the judge server at {live.server.url} ")
    assert f"{cached} verdicts are cached in {cache}" in message and "rerunning resumes from the cache" in message
    assert "after 1 retries" in message
    assert judge.requests_sent < 2 * n

    live.server = VllmServer(live.server.model_dir, port=live.server.port, max_model_len=512,
                             work=live.server.work).start()  # same port, so the same base_url and cache keys
    rerun = judge_of(live.server, cache, max_retries=1, timeout=5)
    result = rerun.compare(prompts, first, second)
    assert (rerun.cache_hits, rerun.requests_sent) == (cached, 2 * n - cached)
    assert len(result) == n and len(read_cache(cache)) == 2 * n
