"""The HTTP pairwise judge (dpolab.http_judge).

Against a real vLLM OpenAI-compatible server of the tiny Llama (one server for the module,
dpolab.judge_server.VllmServer): verdicts in both orders, the cache (a second judge asks nothing), the
endpoint check, and a server that dies mid-run (JudgeUnavailable, the verdicts received kept,
a rerun on a restarted server asks only for the missing ones). The tiny model is random: its
replies are rarely a label, so most of its verdicts are unparsed ties; one test picks labels
among the server's own top tokens to read a verdict from real logprobs.
(tests/unit/test_http_judge.py checks the retry policy, the key and the parsing against a scripted
server.)"""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest

from dpolab.errors import ConfigError
from dpolab.http_judge import (
    HTTPPairwiseJudge,
    JudgeUnavailable,
    check_endpoint,
    read_cache,
)
from dpolab.judge_server import VllmServer
from helpers.services import free_port

FAKE_KEY = "sk-dpolab-FAKE-KEY-7f3c9e1d2b84"
KEY_ENV = "DPOLAB_TEST_JUDGE_KEY"


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


# a real vLLM server (~30 s to start): the full suite, not test-unit
def test_check_endpoint_on_a_real_server(live):
    check_endpoint(live.server.url, live.server.model)
    with pytest.raises(ConfigError, match=r"judges\.live\.model: 'gpt-4o' is not served at .*; it serves: \['.*l'\]"):
        check_endpoint(live.server.url, "gpt-4o", where="judges.live")
    nowhere = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(
        ConfigError,
        match=rf"judges\.<name>\.base_url: no server answers at {nowhere} .*refused.*"
        r"python -m vllm\.entrypoints\.openai\.api_server",
    ):
        check_endpoint(nowhere, live.server.model)


# a real vLLM server (~30 s to start): the full suite, not test-unit
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


# a real vLLM server (~30 s to start): the full suite, not test-unit
def test_real_server_verdict_read_from_the_top_logprobs(live):
    """Labels chosen among the server's own top tokens for a request: the verdict is the slot of
    the most likely one, read from real logprobs (the tiny model rarely says 1, 2 or 0)."""
    judge = judge_of(live.server)
    body = json.dumps(
        {
            "model": live.server.model,
            "messages": judge.messages("Rate:", " good", " bad"),
            "temperature": 0,
            "max_tokens": 1,
            "logprobs": True,
            "top_logprobs": 20,
            "seed": 0,
        }
    ).encode()
    request = urllib.request.Request(
        f"{live.server.url}/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        tops = json.load(response)["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    tokens = []
    for top in tops:  # distinct labels, none blank once stripped
        if top["token"].strip() and top["token"].strip() not in {t.strip() for t in tokens}:
            tokens.append(top["token"])
    labels = {"second": tokens[0], "tie": tokens[1], "first": tokens[2]}  # the most likely one in the second slot
    judge = judge_of(live.server, labels=labels)
    assert judge.verdicts(["Rate:"], [" good"], [" bad"]) == ["second"] and judge.unparsed == 0


# a real vLLM server (~30 s to start): the full suite, not test-unit
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

    live.server = VllmServer(
        live.server.model_dir, port=live.server.port, max_model_len=512, work=live.server.work
    ).start()  # same port, so the same base_url and cache keys
    rerun = judge_of(live.server, cache, max_retries=1, timeout=5)
    result = rerun.compare(prompts, first, second)
    assert (rerun.cache_hits, rerun.requests_sent) == (cached, 2 * n - cached)
    assert len(result) == n and len(read_cache(cache)) == 2 * n
