"""Judges of generated reviews, behind one small interface (`Judge`):

- pointwise judges give each (prompt, completion) a score, higher is better, and compare two
  completions by their scores (ties count half);
- pairwise judges only compare: they say which of two completions is better, or a tie.

Judges:
- GoldJudge: TF-IDF + logistic regression trained in the workflow on the train split (the
  study's "gold" reward, as the DPO paper's sentiment classifier). Stored as JSON + npz, never
  pickle: the vocabulary and settings in JSON, idf and weights in npz.
- VaderJudge: the VADER lexicon (vaderSentiment), an independent second opinion that exposes
  policies which exploit the gold judge rather than becoming more positive.
- RewardModelJudge: any AutoModelForSequenceClassification (a local folder or a hub id).
- LLMPairwiseJudge: an instruction model run with vLLM on a prompt template; each pair is
  judged in both orders, so the judge's position bias is measured and averaged out.
- HTTPPairwiseJudge (dpolab.http_judge): the same question to an OpenAI-compatible endpoint.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from dpolab.errors import ConfigError
from dpolab.settings import JudgeConfig

if TYPE_CHECKING:  # imported where used: every workflow parse reads this module
    from sklearn.feature_extraction.text import TfidfVectorizer

VOCAB_FILE, WEIGHTS_FILE, SETTINGS_FILE = "vocabulary.json", "weights.npz", "judge.json"


class Judge:
    """The judge interface. `name` is the judge's name in the study config."""

    name: str = "judge"
    pairwise: bool = False

    def score(self, prompts: list[str], completions: list[str]) -> np.ndarray:
        """One score per (prompt, completion); higher is better. Pointwise judges only."""
        raise NotImplementedError(f"judge {self.name!r} is pairwise: it compares, it does not score")

    def compare(self, prompts: list[str], first: list[str], second: list[str]) -> pd.DataFrame:
        """Per pair, column `preference`: 1 if `first` is better, 0 if `second` is, 0.5 on a
        tie (pairwise judges add their per-order verdicts)."""
        return pd.DataFrame(
            {"preference": preference_from_scores(self.score(prompts, first), self.score(prompts, second))}
        )


def preference_from_scores(first_scores, second_scores) -> np.ndarray:
    """1 where the first score is higher, 0.5 on a tie, 0 where it is lower."""
    first_scores, second_scores = np.asarray(first_scores), np.asarray(second_scores)
    return np.where(first_scores > second_scores, 1.0, np.where(first_scores == second_scores, 0.5, 0.0))


class TextJudge(Judge):
    """A judge of the whole review text: it reads the prompt followed by the completion."""

    def score_texts(self, texts) -> np.ndarray:
        raise NotImplementedError

    def score(self, prompts, completions) -> np.ndarray:
        return self.score_texts([p + c for p, c in zip(prompts, completions)])


class GoldJudge(TextJudge):
    """score_texts(texts) -> P(positive) in [0, 1]."""

    name = "gold"

    def __init__(self, vectorizer: TfidfVectorizer, coef: np.ndarray, intercept: float):
        self.vectorizer, self.coef, self.intercept = vectorizer, np.asarray(coef, dtype=np.float64), float(intercept)

    @classmethod
    def fit(cls, texts, labels, cfg: JudgeConfig) -> GoldJudge:
        # scikit-learn where it is used: every workflow parse reads this module's template check
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        vectorizer = TfidfVectorizer(
            max_features=cfg.max_features, ngram_range=(1, cfg.ngram_max), sublinear_tf=True, min_df=2
        )
        features = vectorizer.fit_transform(list(texts))
        classifier = LogisticRegression(C=cfg.C, max_iter=1000).fit(features, np.asarray(labels))
        return cls(vectorizer, classifier.coef_[0], classifier.intercept_[0])

    def logits(self, texts) -> np.ndarray:
        return np.asarray(self.vectorizer.transform(list(texts)) @ self.coef).ravel() + self.intercept

    def score_texts(self, texts) -> np.ndarray:
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
    def load(cls, folder: Path) -> GoldJudge:
        folder = Path(folder)
        settings = json.loads((folder / SETTINGS_FILE).read_text())
        vocabulary = json.loads((folder / VOCAB_FILE).read_text())
        weights = np.load(folder / WEIGHTS_FILE, allow_pickle=False)
        from sklearn.feature_extraction.text import TfidfVectorizer

        vectorizer = TfidfVectorizer(
            vocabulary=vocabulary,
            ngram_range=tuple(settings["ngram_range"]),
            sublinear_tf=settings["sublinear_tf"],
            lowercase=settings["lowercase"],
            norm=settings["norm"],
        )
        vectorizer.idf_ = weights["idf"]  # the setter rebuilds the fitted transformer
        return cls(vectorizer, weights["coef"], float(weights["intercept"][0]))


class VaderJudge(TextJudge):
    """score_texts(texts) -> VADER compound polarity in [-1, 1]."""

    name = "vader"

    def __init__(self):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.analyzer = SentimentIntensityAnalyzer()

    def score_texts(self, texts) -> np.ndarray:
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
    vader_pred = (vader.score_texts(held_out["text"]) > 0).astype(int)
    gold_scores = judge.score_texts(held_out["text"])
    metrics = {
        "gold_accuracy_full": judge.accuracy(held_out["text"], held_out["label"]),
        "gold_accuracy_prefix": judge.accuracy(prefixes, held_out["label"]),
        "vader_accuracy_full": float((vader_pred == held_out["label"].to_numpy()).mean()),
        "gold_vader_correlation": float(np.corrcoef(gold_scores, vader.score_texts(held_out["text"]))[0, 1]),
        "n_train": int(len(train)),
        "n_held_out": int(len(held_out)),
        "vocabulary_size": int(len(judge.vectorizer.vocabulary_)),
        "config": asdict(cfg),
    }
    (out_dir / "accuracy.json").write_text(json.dumps(metrics, indent=2))
    return metrics


class RewardModelJudge(Judge):
    """A reward model: any AutoModelForSequenceClassification, from a local folder or a hub id.

    With one output the score is that logit; with several it is the softmax probability of
    class `label` (default: the last, "positive" in the usual sentiment heads)."""

    def __init__(
        self,
        name: str,
        path: str,
        *,
        revision: str | None = None,
        trust_remote_code: bool = False,
        label: int | None = None,
        chat_template: bool = False,
        batch_size: int = 16,
        max_length: int = 512,
    ):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.name, self.batch_size, self.max_length, self.chat_template = name, batch_size, max_length, chat_template
        self.tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, revision=revision, trust_remote_code=trust_remote_code, dtype=torch.float32
        ).eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:  # the head reads the last non-pad token
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        n_labels = self.model.config.num_labels
        self.label = (n_labels - 1 if label is None else label) if n_labels > 1 else None
        if self.label is not None and not 0 <= self.label < n_labels:
            raise ValueError(f"judges.{name}.label: {label} is not a class of the model ({n_labels} labels)")

    def _texts(self, prompts, completions) -> list[str]:
        if self.chat_template:
            return [
                self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": p}, {"role": "assistant", "content": c}], tokenize=False
                )
                for p, c in zip(prompts, completions)
            ]
        return [p + c for p, c in zip(prompts, completions)]

    def score(self, prompts, completions) -> np.ndarray:
        import torch

        texts, out = self._texts(prompts, completions), []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(
                    texts[start : start + self.batch_size],
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                )
                logits = self.model(**batch).logits.float()
                values = logits[:, 0] if self.label is None else torch.softmax(logits, dim=-1)[:, self.label]
                out.extend(values.tolist())
        return np.asarray(out, dtype=np.float64)


DEFAULT_PAIRWISE_TEMPLATE = (
    "Here is the start of a movie review, and two ways to continue it.\n"
    "Review start: {prompt}\n"
    "Continuation 1: {first}\n"
    "Continuation 2: {second}\n"
    "Which continuation is more positive? Answer 1 or 2, or 0 if they are equally positive.\n"
    "Answer: "
)
# Digits are single tokens in the SmolLM2/Llama-style BPE tokenizers (the template ends in a
# space so the answer token is the bare digit); other judges may need other labels.
DEFAULT_PAIRWISE_LABELS = {"first": "1", "second": "2", "tie": "0"}
TEMPLATE_FIELDS = ("prompt", "first", "second")


def check_template(template: str, where: str, fields: tuple[str, ...] = TEMPLATE_FIELDS) -> None:
    """A pairwise template must parse as a str.format template and use exactly `fields`."""
    import string

    try:
        used = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:  # a stray brace
        raise ConfigError(f"{where}: not a valid template ({error}); write a literal brace as {{{{ or }}}}") from None
    missing, unknown = set(fields) - used, used - set(fields)
    if missing or unknown:
        raise ConfigError(
            f"{where}: the template must use "
            + ", ".join("{" + f + "}" for f in fields)
            + (f"; missing {sorted(missing)}" if missing else "")
            + (f"; unknown {sorted(unknown)}" if unknown else "")
        )


def combine_orders(verdict_ab, verdict_ba) -> np.ndarray:
    """Preference for A from the verdicts on (A, B) and on (B, A), each 'first', 'second' or
    'tie': the mean of the two orders' preferences (ties half), so a judge that always picks
    the same slot ends at 0.5 and a consistent one at 0 or 1."""
    value = {"first": 1.0, "tie": 0.5, "second": 0.0}
    ab = np.array([value[v] for v in verdict_ab])
    ba = np.array([1.0 - value[v] for v in verdict_ba])
    return (ab + ba) / 2.0


def position_bias(verdicts) -> dict:
    """How often the judge prefers the first slot among its non-tie verdicts (0.5: no bias),
    and its tie rate, over verdicts from both orders."""
    verdicts = pd.Series(list(verdicts))
    decided = verdicts[verdicts != "tie"]
    return {
        "first_slot_share": float((decided == "first").mean()) if len(decided) else float("nan"),
        "tie_share": float((verdicts == "tie").mean()) if len(verdicts) else float("nan"),
        "verdicts": int(len(verdicts)),
    }


class LLMPairwiseJudge(Judge):
    """An LLM asked which of two completions is better, through vLLM, greedy, with the answer
    restricted to three label tokens (first / second / tie) so every verdict parses. Each pair
    is judged twice, in both orders; see combine_orders and position_bias."""

    pairwise = True

    def __init__(
        self,
        name: str,
        model_dir: str,
        *,
        template: str | None = None,
        labels: dict | None = None,
        chat_template: bool = False,
        max_model_len: int = 512,
        seed: int = 0,
        device: str = "cpu",
        cache_dir=None,
        revision: str | None = None,
        trust_remote_code: bool = False,
    ):
        from dpolab.generate import vllm_engine

        self.name, self.chat_template = name, chat_template
        self.template = template or DEFAULT_PAIRWISE_TEMPLATE
        check_template(self.template, f"judges.{name}.template")
        self.labels = {**DEFAULT_PAIRWISE_LABELS, **(labels or {})}
        from transformers import AutoTokenizer

        # Checked with the tokenizer alone, before the (slow) engine starts.
        self.tokenizer = AutoTokenizer.from_pretrained(
            model_dir, revision=revision, trust_remote_code=trust_remote_code
        )
        self.label_ids = {}
        for slot, text in self.labels.items():
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            if len(ids) != 1:
                raise ValueError(
                    f"judges.{name}.labels.{slot}: {text!r} is {len(ids)} tokens for the judge's tokenizer; "
                    "a label must be one token"
                )
            self.label_ids[ids[0]] = slot
        if len(self.label_ids) != 3:
            raise ValueError(f"judges.{name}.labels: the three labels must be distinct tokens")
        self.llm = vllm_engine(
            model_dir,
            max_model_len=max_model_len,
            seed=seed,
            device=device,
            cache_dir=cache_dir,
            revision=revision,
            trust_remote_code=trust_remote_code,
        )

    def _prompt(self, prompt: str, first: str, second: str) -> str:
        text = self.template.format(prompt=prompt, first=first, second=second)
        if self.chat_template:
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
            )
        return text

    def verdicts(self, prompts, first, second) -> list[str]:
        """One verdict per pair in the given order: 'first', 'second' or 'tie'."""
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, temperature=0.0, allowed_token_ids=list(self.label_ids))
        requests = [self._prompt(p, a, b) for p, a, b in zip(prompts, first, second)]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        return [self.label_ids[out.outputs[0].token_ids[0]] for out in outputs]

    def compare(self, prompts, first, second) -> pd.DataFrame:
        prompts, first, second = list(prompts), list(first), list(second)
        both = self.verdicts(prompts + prompts, first + second, second + first)  # one engine call, both orders
        in_order, swapped = both[: len(prompts)], both[len(prompts) :]
        return pd.DataFrame(
            {
                "preference": combine_orders(in_order, swapped),
                "verdict_in_order": in_order,
                "verdict_swapped": swapped,
            }
        )


def make_gold_judge(
    reviews_file: Path, cfg: JudgeConfig, judge_dir: Path, accuracy_file: Path, *, log: bool = True
) -> dict:
    """The judge job: train_gold_judge on the reviews' train split into judge_dir, its held-out
    accuracy copied to accuracy_file (the rule's report output); with `log`, the metrics and that
    file to the active MLflow run. Returns the metrics."""
    metrics = train_gold_judge(pd.read_parquet(reviews_file), cfg, Path(judge_dir))
    Path(accuracy_file).write_text((Path(judge_dir) / "accuracy.json").read_text())
    if log:
        import mlflow

        mlflow.log_metrics({k: v for k, v in metrics.items() if isinstance(v, float)})
        mlflow.log_artifact(str(accuracy_file))
    return metrics
