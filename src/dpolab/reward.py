"""A reward model trained inside a study: TRL's RewardTrainer on preference pairs (prompt,
chosen, rejected as plain strings; for chat data the chat template is already applied), starting
from the study's base causal LM with a new one-output score head.

What the trainer sees is exactly what `dpolab.judges.RewardModelJudge` scores later:

- each side is the plain concatenation `prompt + chosen` (or `prompt + rejected`), tokenised by
  the model's tokenizer with its default special tokens (`tokenizer(text)`, the judge's call),
  truncated to `max_length` tokens by the tokenizer (the judge's truncation);
- nothing is appended. TRL's RewardTrainer would append the EOS token to chosen and rejected
  when given strings; the judge does not. So the pairs are handed to TRL already tokenised
  (its `chosen_ids` / `rejected_ids` format), which TRL takes as they are: no EOS, no second
  tokenisation. (TRL also drops, rather than truncates, sequences over `max_length`; after the
  truncation here none is over it, so no pair is dropped silently.)

Pairs whose two sides are the same token sequence after truncation (a prompt longer than
`max_length`) carry no signal and are left out of training, counted in the metrics.

The held-out metrics are measured on the saved folder through RewardModelJudge, the code path
the study's judge takes, so they describe that judge.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed
from trl import RewardConfig, RewardTrainer

from dpolab.judges import RewardModelJudge, preference_from_scores
from dpolab.settings import RewardModelSettings
from dpolab.train import _trainer_args, finish_training

PAIR_COLUMNS = ("prompt", "chosen", "rejected")


def check_pairs(pairs: pd.DataFrame, which: str) -> None:
    """A usable pair set: the three string columns, at least one row, no missing text."""
    missing = [c for c in PAIR_COLUMNS if c not in pairs.columns]
    if missing:
        raise ValueError(f"reward model {which} pairs lack the column(s) {missing}: need {list(PAIR_COLUMNS)}")
    if len(pairs) == 0:
        raise ValueError(f"reward model {which} pairs are empty: a reward model needs at least one {which} pair")
    for column in PAIR_COLUMNS:
        values = pairs[column]
        bad = int((values.isna() | ~values.map(lambda v: isinstance(v, str))).sum())
        if bad:
            raise ValueError(f"reward model {which} pairs: {bad} row(s) of `{column}` are not strings")


def tokenized_pairs(pairs: pd.DataFrame, tokenizer, max_length: int) -> tuple[Dataset, dict]:
    """`chosen_ids` / `rejected_ids` as RewardModelJudge tokenises `prompt + completion`
    (tokenizer defaults, truncated to max_length); pairs whose sides coincide after truncation
    are left out. Returns the dataset and counts."""

    def encode(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]

    def full_lengths(texts: list[str]) -> np.ndarray:
        return np.array([len(ids) for ids in tokenizer(texts)["input_ids"]])

    prompts = pairs["prompt"].tolist()
    chosen_texts = [p + c for p, c in zip(prompts, pairs["chosen"])]
    rejected_texts = [p + r for p, r in zip(prompts, pairs["rejected"])]
    chosen, rejected = encode(chosen_texts), encode(rejected_texts)
    truncated = (full_lengths(chosen_texts) > max_length) | (full_lengths(rejected_texts) > max_length)
    keep = [c != r for c, r in zip(chosen, rejected)]
    dataset = Dataset.from_dict(
        {
            "chosen_ids": [c for c, k in zip(chosen, keep) if k],
            "rejected_ids": [r for r, k in zip(rejected, keep) if k],
        }
    )
    return dataset, {"truncated": int(truncated.sum()), "identical_after_truncation": int(len(keep) - sum(keep))}


def load_reward_base(base_dir: Path, seed: int):
    """The base causal LM as a sequence classifier with one output (a new score head, drawn
    with `seed`) and its tokenizer, the pad token set on both (eos when the tokenizer has none)."""
    from trl.trainer.reward_trainer import suppress_seqcls_warning  # the expected missing score / unused lm_head keys

    set_seed(seed)  # the score head is newly initialised: seeded
    with suppress_seqcls_warning():
        model = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=1, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id  # the head reads the last non-pad token
    return model, tokenizer


def held_out_metrics(model_dir: Path, pairs: pd.DataFrame, max_length: int) -> dict:
    """Pairwise accuracy (ties half) and mean margin of the saved reward model on `pairs`,
    scored by RewardModelJudge as the study's judge scores."""
    judge = RewardModelJudge("reward_model", str(model_dir), max_length=max_length)
    prompts = pairs["prompt"].tolist()
    chosen = judge.score(prompts, pairs["chosen"].tolist())
    rejected = judge.score(prompts, pairs["rejected"].tolist())
    if not (np.isfinite(chosen).all() and np.isfinite(rejected).all()):
        raise ValueError(f"the reward model at {model_dir} gives non-finite scores")
    return {
        "pairwise_accuracy": float(preference_from_scores(chosen, rejected).mean()),
        "margin_mean": float((chosen - rejected).mean()),
        "score_mean": float(np.concatenate([chosen, rejected]).mean()),
        "score_std": float(np.concatenate([chosen, rejected]).std()),
    }


def train_reward_model(
    base_dir: Path,
    train_pairs: pd.DataFrame,
    eval_pairs: pd.DataFrame,
    cfg: RewardModelSettings,
    out_dir: Path,
    *,
    use_cpu: bool,
    mlflow_active: bool,
    training=None,
) -> dict:
    """Train a reward model on `train_pairs` with TRL's RewardTrainer (Bradley-Terry loss
    -log sigmoid(r_chosen - r_rejected)), save it to out_dir/model (safetensors, config,
    tokenizer, training_args.json) with out_dir/train_log.json, measure it on `eval_pairs`
    through RewardModelJudge, write out_dir/accuracy.json and return those metrics."""
    check_pairs(train_pairs, "train")
    check_pairs(eval_pairs, "eval")
    base_dir, out_dir = Path(base_dir), Path(out_dir)
    model, tokenizer = load_reward_base(base_dir, cfg.seed)
    train_dataset, counts = tokenized_pairs(train_pairs, tokenizer, cfg.max_length)
    if len(train_dataset) == 0:
        raise ValueError(
            f"reward model train pairs: all {len(train_pairs)} have identical chosen and rejected tokens after "
            f"truncation to reward_model.max_length={cfg.max_length}; raise max_length"
        )
    args = RewardConfig(
        **_trainer_args(cfg, out_dir, seed=cfg.seed, use_cpu=use_cpu, mlflow_active=mlflow_active, training=training)
    )
    trainer = RewardTrainer(model=model, args=args, train_dataset=train_dataset, processing_class=tokenizer)
    if len(trainer.train_dataset) != len(train_dataset):  # TRL's length filter: nothing is over max_length here
        raise RuntimeError("RewardTrainer dropped pairs over max_length that the truncation should have kept")
    trained = finish_training(trainer, tokenizer, trainer.train(), out_dir)
    main_process = trainer.accelerator.is_main_process
    del trainer, model
    if not main_process:  # another training process of a launched job: rank 0 measures and writes
        return {"train_loss": float(trained["train_loss"]), "steps": int(trained["steps"])}
    eval_counts = tokenized_pairs(eval_pairs, tokenizer, cfg.max_length)[1]
    metrics = {
        **held_out_metrics(out_dir / "model", eval_pairs, cfg.max_length),
        "n_train_pairs": int(len(train_pairs)),
        "n_train_pairs_used": int(len(train_dataset)),
        "n_train_truncated": counts["truncated"],
        "n_train_identical_after_truncation": counts["identical_after_truncation"],
        "n_eval_pairs": int(len(eval_pairs)),
        "n_eval_truncated": eval_counts["truncated"],
        "train_loss": float(trained["train_loss"]),
        "steps": int(trained["steps"]),
        "settings": asdict(cfg),
    }
    (out_dir / "accuracy.json").write_text(json.dumps(metrics, indent=2))
    return metrics
