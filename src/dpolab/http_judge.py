"""A pairwise LLM judge behind an OpenAI-compatible chat-completions endpoint (a vLLM server,
or any hosted API that returns logprobs).

Each pair is judged in both orders, as LLMPairwiseJudge does in process (see combine_orders and
position_bias), with one request per order: greedy, one token, and the top logprobs of that
token, from which the verdict is read (verdict_from_reply).

Verdicts go to an append-only JSONL cache as they arrive, so a run that loses its server keeps
every verdict already received and a rerun asks only for the missing ones.

check_endpoint is the cheap before-any-work check (stdlib only) that a server answers there and
serves the model.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import pandas as pd

from dpolab.errors import ConfigError
from dpolab.judges import DEFAULT_PAIRWISE_LABELS, Judge, check_template, combine_orders

# AlpacaEval's pairwise judges (alpaca_farm / alpaca_eval_gpt4) open with this system prompt.
ALPACA_SYSTEM_PROMPT = "You are a helpful assistant, that ranks models by the quality of their answers."
ALPACA_PAIRWISE_TEMPLATE = (
    "Select the output, (1) or (2), that is better for the given instruction.\n\n"
    "# Instruction:\n{prompt}\n\n"
    "# Output (1):\n{first}\n\n"
    "# Output (2):\n{second}\n\n"
    "# Which output is better for the instruction, Output (1) or Output (2)? Answer with exactly one of "
    "these labels and nothing else: 1 if Output (1) is better, 2 if Output (2) is better, 0 if they are "
    "equally good."
)
SLOTS = ("first", "second", "tie")
START_HINT = "python -m vllm.entrypoints.openai.api_server --model DIR --host 127.0.0.1 --port P"


class JudgeUnavailable(RuntimeError):
    """The judge's server could not be reached, or kept failing after the retries; the message
    says which judge, where, what happened and how many verdicts the cache holds."""


class _Secret:
    """An API key that never shows in a repr, vars() or a log line."""

    __slots__ = ("value",)

    def __init__(self, value: str | None):
        self.value = value

    def __repr__(self) -> str:
        return "<secret>" if self.value else "<none>"

    def redact(self, text: str) -> str:
        return text.replace(self.value, "<secret>") if self.value else text


def normalize_labels(labels: dict | None, where: str) -> dict[str, str]:
    """The three labels (first, second, tie) over the defaults: distinct non-empty texts."""
    merged = {**DEFAULT_PAIRWISE_LABELS, **(labels or {})}
    unknown = set(merged) - set(SLOTS)
    if unknown:
        raise ConfigError(f"{where}.labels: unknown slots {sorted(unknown)}; the slots are {list(SLOTS)}")
    stripped = [str(merged[slot]).strip() for slot in SLOTS]
    if not all(stripped) or len(set(stripped)) != 3:
        raise ConfigError(f"{where}.labels: the three labels must be distinct, non-blank texts (got {merged})")
    return {slot: str(merged[slot]) for slot in SLOTS}


def verdict_from_reply(top_logprobs, text: str | None, labels: dict[str, str]) -> tuple[str | None, str]:
    """The verdict ('first' | 'second' | 'tie', or None) of one reply, and how it was read
    ('logprobs' | 'text' | 'unparsed').

    `top_logprobs`: (token text, logprob) pairs of the first generated token. The verdict is
    the label with the highest logprob among them. Taking the argmax among the label tokens
    (rather than the sampled token) makes the verdict equal to an in-process greedy judge
    restricted to the label tokens (LLMPairwiseJudge's allowed_token_ids) whenever a label is
    in the top logprobs: a label that is missing there ranks below every token listed, so below
    the best label listed. Tokens spelled exactly as a label are preferred (they are the label
    tokens the in-process judge allows); a token equal to a label only once stripped (" 1") is
    the fallback. Failing both, the reply text, stripped, must be a label alone."""
    slot_of = {label: slot for slot, label in labels.items()}
    stripped_slot_of = {label.strip(): slot for slot, label in labels.items()}
    pairs = [(str(token), float(logprob)) for token, logprob in (top_logprobs or [])]
    candidates = [(lp, slot_of[token]) for token, lp in pairs if token in slot_of]
    if not candidates:
        candidates = [(lp, stripped_slot_of[token.strip()]) for token, lp in pairs if token.strip() in stripped_slot_of]
    if candidates:
        return max(candidates, key=lambda c: c[0])[1], "logprobs"  # first listed wins an exact tie
    slot = stripped_slot_of.get((text or "").strip())
    return (slot, "text") if slot else (None, "unparsed")


def read_cache(path: Path | str | None) -> dict[str, dict]:
    """key -> entry of a verdict cache; lines that do not parse (a last line cut short when a
    run died while writing it) are skipped."""
    entries: dict[str, dict] = {}
    if path is None or not Path(path).exists():
        return entries
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and isinstance(entry.get("key"), str) and entry.get("verdict") in SLOTS:
                entries[entry["key"]] = entry
    return entries


class HTTPPairwiseJudge(Judge):
    """An LLM behind an OpenAI-compatible /chat/completions endpoint, asked which of two
    completions is better; each pair judged in both orders (compare).

    Counters, over the object's life: `requests_sent` (verdicts asked of the server),
    `cache_hits` (verdicts read from the cache), `unparsed` (verdicts that were no label,
    counted as ties; cached ones included)."""

    pairwise = True

    def __init__(
        self,
        name: str,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = None,
        template: str | None = None,
        system_prompt: str | None = None,
        labels: dict | None = None,
        max_concurrency: int = 4,
        max_retries: int = 4,
        timeout: float = 60.0,
        top_logprobs: int = 20,
        cache_path: Path | str | None = None,
    ):
        where = f"judges.{name}"
        self.name, self.model = name, model
        self.base_url = base_url.rstrip("/")
        self.template = template if template is not None else ALPACA_PAIRWISE_TEMPLATE
        check_template(self.template, f"{where}.template")
        # None: AlpacaEval's; "": no system message at all (the chat template's default, if it has one)
        self.system_prompt = ALPACA_SYSTEM_PROMPT if system_prompt is None else system_prompt
        self.labels = normalize_labels(labels, where)
        if max_concurrency < 1 or max_retries < 0 or timeout <= 0 or not 0 <= top_logprobs <= 20:
            raise ConfigError(
                f"{where}: max_concurrency >= 1, max_retries >= 0, timeout > 0 and 0 <= top_logprobs "
                f"<= 20 (vLLM's default cap) are required"
            )
        self.max_concurrency, self.max_retries, self.timeout = max_concurrency, max_retries, float(timeout)
        self.top_logprobs = top_logprobs
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self.api_key_env = api_key_env
        key = None
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise ConfigError(
                    f"{where}.api_key_env: the environment variable {api_key_env} is unset or empty; "
                    "export the API key in it, or drop api_key_env for a server that needs no key"
                )
        self._key = _Secret(key)
        self.cache_hits = self.requests_sent = self.unparsed = 0
        self._lock = threading.Lock()
        self._client = None

    def __repr__(self) -> str:
        return (
            f"HTTPPairwiseJudge(name={self.name!r}, base_url={self.base_url!r}, model={self.model!r}, "
            f"api_key_env={self.api_key_env!r}, cache_path={str(self.cache_path) if self.cache_path else None!r})"
        )

    # ---- identity and cache -------------------------------------------------------------------
    def identity(self) -> list:
        """What a verdict depends on besides the pair (the API key is not part of it)."""
        return [self.base_url, self.model, self.system_prompt, self.template, [self.labels[s] for s in SLOTS]]

    def cache_key(self, prompt: str, first: str, second: str) -> str:
        payload = json.dumps([self.identity(), prompt, first, second], ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def _append(self, entry: dict) -> None:
        """Append one verdict and flush it (called under the lock, from a worker thread)."""
        if self.cache_path is None:
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.cache_path, "a+b") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell():  # a last line cut short by a dead run: end it, so this entry parses
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    handle.write(b"\n")
            handle.write((json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8"))
            handle.flush()

    # ---- requests -----------------------------------------------------------------------------
    def messages(self, prompt: str, first: str, second: str) -> list[dict]:
        user = {"role": "user", "content": self.template.format(prompt=prompt, first=first, second=second)}
        return ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else []) + [user]

    def client(self):
        """The openai client: it retries 408/409/429/5xx, timeouts and connection errors
        `max_retries` times with exponential backoff (0.5 s doubling, at most 8 s, jittered; a
        server's Retry-After up to 2 min is honoured) and fails at once on other 4xx answers
        (tests/unit/test_http_judge.py checks 429, 503 and 400 against a scripted server)."""
        if self._client is None:
            import openai

            self._client = openai.OpenAI(
                base_url=self.base_url,
                api_key=self._key.value or "EMPTY",
                max_retries=self.max_retries,
                timeout=self.timeout,
            )
        return self._client

    def _ask(self, key: str, prompt: str, first: str, second: str) -> dict:
        with self._lock:
            self.requests_sent += 1
        response = self.client().chat.completions.create(
            model=self.model,
            messages=self.messages(prompt, first, second),
            temperature=0,
            max_tokens=1,
            logprobs=True,
            top_logprobs=self.top_logprobs,
            seed=0,
        )
        choice = response.choices[0]
        content = choice.logprobs.content if choice.logprobs is not None else None
        tops = [(t.token, t.logprob) for t in (content[0].top_logprobs or [])] if content else []
        text = choice.message.content or ""
        verdict, how = verdict_from_reply(tops, text, self.labels)
        listed = {}  # the labels' own logprobs, where listed (exact spelling): the verdict's margin
        for token, logprob in tops:
            for slot, label in self.labels.items():
                if token == label and slot not in listed:
                    listed[slot] = logprob
        entry = {"key": key, "verdict": verdict or "tie", "how": how, "reply": text, "label_logprobs": listed}
        with self._lock:
            self._append(entry)
        return entry

    def _describe(self, error: Exception) -> str:
        """What went wrong, in a line, the key redacted."""
        import openai

        retries = f"after {self.max_retries} retries" if self.max_retries else "with no retries"
        if isinstance(error, openai.APITimeoutError):
            return f"no answer within {self.timeout:g} s ({retries})"
        if isinstance(error, openai.APIConnectionError):
            cause = error.__cause__ or error
            reason = "connection refused" if "refused" in str(cause).lower() else f"connection failed ({cause})"
            return f"{reason} ({retries})"
        if isinstance(error, openai.APIStatusError):
            status = error.status_code
            body = error.body
            detail = body.get("message") if isinstance(body, dict) and body.get("message") else body or error.message
            detail = str(detail)[:300]
            if status in (401, 403):
                hint = (
                    f"the API key in ${self.api_key_env} was refused"
                    if self._key.value
                    else f"the server wants an API key: set judges.{self.name}.api_key_env"
                )
                return f"HTTP {status}: {hint} (not retried)"
            if status == 429 or status >= 500 or status in (408, 409):
                return f"HTTP {status} {retries}: {detail}"
            return f"HTTP {status} (not retried: the request itself was refused): {detail}"
        return f"{type(error).__name__}: {error}"

    def _unavailable(self, error: Exception, done: int, needed: int) -> JudgeUnavailable:
        what = self._key.redact(self._describe(error))
        if self.cache_path is not None:
            cached = len(read_cache(self.cache_path))
            cache = (
                f"{cached} verdicts are cached in {self.cache_path} ({done} of the {needed} this call asked for); "
                "rerunning resumes from the cache"
            )
        else:
            cache = f"no cache_path is set, so the {done} verdicts received are lost and a rerun asks for all again"
        return JudgeUnavailable(
            f"judges.{self.name}: the judge server at {self.base_url} (model {self.model!r}) failed: {what}. {cache}."
        )

    # ---- the Judge interface ------------------------------------------------------------------
    def verdicts(self, prompts, first, second) -> list[str]:
        """One verdict per pair in the given order: 'first', 'second' or 'tie'. Cached verdicts
        are reused; the others are asked for, `max_concurrency` at a time."""
        jobs = [(self.cache_key(p, a, b), p, a, b) for p, a, b in zip(prompts, first, second)]
        cache = read_cache(self.cache_path)
        missing = {key: (key, p, a, b) for key, p, a, b in jobs if key not in cache}  # each distinct pair once
        with self._lock:
            self.cache_hits += sum(key in cache for key, *_ in jobs)
        if missing:
            failure, _ = None, self.client()  # made once, here: the workers share it (it is thread-safe)
            pool = ThreadPoolExecutor(
                max_workers=min(self.max_concurrency, len(missing)), thread_name_prefix=f"judge-{self.name}"
            )
            try:
                futures = [pool.submit(self._ask, *job) for job in missing.values()]
                for future in as_completed(futures):
                    if future.exception() is not None:
                        failure = future.exception()
                        break
            finally:
                pool.shutdown(wait=True, cancel_futures=True)  # requests in flight end (and are cached)
            answers = {
                f.result()["key"]: f.result()
                for f in futures
                if f.done() and not f.cancelled() and f.exception() is None
            }
            if failure is not None:
                import openai

                if not isinstance(failure, openai.OpenAIError):
                    raise failure
                raise self._unavailable(failure, len(answers), len(missing)) from None
            cache.update(answers)
        entries = [cache[key] for key, *_ in jobs]
        with self._lock:
            self.unparsed += sum(e.get("how") == "unparsed" for e in entries)
        return [e["verdict"] for e in entries]

    def compare(self, prompts, first, second) -> pd.DataFrame:
        prompts, first, second = list(prompts), list(first), list(second)
        both = self.verdicts(prompts + prompts, first + second, second + first)  # one pool, both orders
        in_order, swapped = both[: len(prompts)], both[len(prompts) :]
        return pd.DataFrame(
            {
                "preference": combine_orders(in_order, swapped),
                "verdict_in_order": in_order,
                "verdict_swapped": swapped,
            }
        )

    def check(self, timeout: float = 5.0) -> None:
        """check_endpoint with this judge's URL, model and key."""
        check_endpoint(self.base_url, self.model, api_key=self._key.value, timeout=timeout, where=f"judges.{self.name}")


def check_endpoint(
    base_url: str, model: str, *, api_key: str | None = None, timeout: float = 5.0, where: str = "judges.<name>"
) -> None:
    """Fail fast, with the standard library alone, when `base_url` (e.g. http://127.0.0.1:8000/v1)
    is not an OpenAI-compatible API that serves `model`: GET {base_url}/models."""
    base_url = base_url.rstrip("/")
    url = f"{base_url}/models"
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    secret = _Secret(api_key)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        if error.code in (401, 403):
            hint = (
                (
                    "it refused the API key (the one in the environment variable named by "
                    f"{where}.api_key_env): check the key"
                )
                if api_key
                else f"it wants an API key: set {where}.api_key_env to the name of an environment variable holding it"
            )
        elif error.code in (404, 405):
            hint = f"no /models there: is it an OpenAI-compatible API, and does {where}.base_url end in /v1?"
        else:
            hint = "the server is failing"
        raise ConfigError(f"{where}.base_url: {url} answered HTTP {error.code}: {hint}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = secret.redact(str(getattr(error, "reason", error)))
        raise ConfigError(
            f"{where}.base_url: no server answers at {base_url} ({reason}); start it (e.g. {START_HINT}) "
            "or fix base_url"
        ) from None
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, list):
        raise ConfigError(
            f"{where}.base_url: the server at {base_url} answered, but not as an OpenAI-compatible API "
            f"(GET /models is not a JSON model list: {secret.redact(repr(body[:60]))}); check the host, "
            "port and path (it should end in /v1)"
        )
    served = [str(m.get("id")) for m in data if isinstance(m, dict)]
    if model not in served:
        raise ConfigError(f"{where}.model: {model!r} is not served at {base_url}; it serves: {served}")
