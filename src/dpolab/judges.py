"""Judges of generated reviews.

- GoldJudge: TF-IDF + logistic regression trained in the workflow on the train split (the
  study's "gold" reward, as the DPO paper's sentiment classifier). Stored as JSON + npz, never
  pickle: the vocabulary and settings in JSON, idf and weights in npz.
- VaderJudge: the VADER lexicon (vaderSentiment), an independent second opinion that exposes
  policies which exploit the gold judge rather than becoming more positive.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

VOCAB_FILE, WEIGHTS_FILE, SETTINGS_FILE = "vocabulary.json", "weights.npz", "judge.json"


@dataclass
class JudgeConfig:
    max_features: int = field(default=50000, metadata={"help": "TF-IDF vocabulary size"})
    ngram_max: int = field(default=2, metadata={"help": "largest word n-gram"})
    C: float = field(default=4.0, metadata={"help": "inverse L2 strength of the logistic regression"})
    prefix_words: int = field(default=40, metadata={"help": "prefix length for the held-out prefix accuracy"})

    def __post_init__(self):
        if self.C <= 0:
            raise ValueError("judge.C must be > 0")


class GoldJudge:
    """score(texts) -> P(positive) in [0, 1]."""

    def __init__(self, vectorizer: TfidfVectorizer, coef: np.ndarray, intercept: float):
        self.vectorizer, self.coef, self.intercept = vectorizer, np.asarray(coef, dtype=np.float64), float(intercept)

    @classmethod
    def fit(cls, texts, labels, cfg: JudgeConfig) -> "GoldJudge":
        vectorizer = TfidfVectorizer(
            max_features=cfg.max_features, ngram_range=(1, cfg.ngram_max), sublinear_tf=True, min_df=2
        )
        features = vectorizer.fit_transform(list(texts))
        classifier = LogisticRegression(C=cfg.C, max_iter=1000).fit(features, np.asarray(labels))
        return cls(vectorizer, classifier.coef_[0], classifier.intercept_[0])

    def logits(self, texts) -> np.ndarray:
        return np.asarray(self.vectorizer.transform(list(texts)) @ self.coef).ravel() + self.intercept

    def score(self, texts) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logits(texts)))

    def accuracy(self, texts, labels) -> float:
        return float(((self.logits(texts) > 0).astype(int) == np.asarray(labels)).mean())

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        vocabulary = {term: int(index) for term, index in self.vectorizer.vocabulary_.items()}
        (folder / VOCAB_FILE).write_text(json.dumps(vocabulary))
        np.savez(folder / WEIGHTS_FILE, idf=self.vectorizer.idf_, coef=self.coef, intercept=np.array([self.intercept]))
        settings = {k: self.vectorizer.get_params()[k] for k in ("ngram_range", "sublinear_tf", "lowercase", "norm")}
        (folder / SETTINGS_FILE).write_text(json.dumps({"kind": "tfidf-logreg", **settings}, indent=2))

    @classmethod
    def load(cls, folder: Path) -> "GoldJudge":
        folder = Path(folder)
        settings = json.loads((folder / SETTINGS_FILE).read_text())
        vocabulary = json.loads((folder / VOCAB_FILE).read_text())
        weights = np.load(folder / WEIGHTS_FILE, allow_pickle=False)
        vectorizer = TfidfVectorizer(
            vocabulary=vocabulary,
            ngram_range=tuple(settings["ngram_range"]),
            sublinear_tf=settings["sublinear_tf"],
            lowercase=settings["lowercase"],
            norm=settings["norm"],
        )
        vectorizer.idf_ = weights["idf"]  # the setter rebuilds the fitted transformer
        return cls(vectorizer, weights["coef"], float(weights["intercept"][0]))


class VaderJudge:
    """score(texts) -> VADER compound polarity in [-1, 1]."""

    def __init__(self):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.analyzer = SentimentIntensityAnalyzer()

    def score(self, texts) -> np.ndarray:
        return np.array([self.analyzer.polarity_scores(t)["compound"] for t in texts], dtype=np.float64)


def train_gold_judge(reviews, cfg: JudgeConfig, out_dir: Path) -> dict:
    """Fit on the train split, measure on the held-out eval split (full reviews and
    `prefix_words`-word prefixes, the length policies produce), save; return the metrics."""
    train = reviews[reviews["split"] == "train"]
    held_out = reviews[reviews["split"] == "eval"]
    judge = GoldJudge.fit(train["text"], train["label"], cfg)
    judge.save(out_dir)
    prefixes = [" ".join(t.split()[: cfg.prefix_words]) for t in held_out["text"]]
    vader = VaderJudge()
    vader_pred = (vader.score(held_out["text"]) > 0).astype(int)
    gold_scores = judge.score(held_out["text"])
    metrics = {
        "gold_accuracy_full": judge.accuracy(held_out["text"], held_out["label"]),
        "gold_accuracy_prefix": judge.accuracy(prefixes, held_out["label"]),
        "vader_accuracy_full": float((vader_pred == held_out["label"].to_numpy()).mean()),
        "gold_vader_correlation": float(np.corrcoef(gold_scores, vader.score(held_out["text"]))[0, 1]),
        "n_train": int(len(train)),
        "n_held_out": int(len(held_out)),
        "vocabulary_size": int(len(judge.vectorizer.vocabulary_)),
        "config": asdict(cfg),
    }
    (out_dir / "accuracy.json").write_text(json.dumps(metrics, indent=2))
    return metrics
