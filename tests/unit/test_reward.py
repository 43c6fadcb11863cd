"""The study's reward model (dpolab.reward): TRL's RewardTrainer on a tiny scratch Llama, saved as
a plain transformers folder, measured through RewardModelJudge."""

import json
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest

from dpolab.settings import RewardModelSettings

POSITIVE = ["great", "wonderful", "superb", "brilliant", "delightful", "excellent", "moving", "charming"]
NEGATIVE = ["awful", "boring", "dreadful", "terrible", "dull", "painful", "clumsy", "tedious"]
SUBJECTS = ["film", "acting", "story", "ending", "script", "music", "cast", "plot"]
METRIC_FIELDS = {
    "pairwise_accuracy",
    "margin_mean",
    "n_train_pairs",
    "n_eval_pairs",
    "train_loss",
    "steps",
    "settings",
    "n_train_pairs_used",
    "n_train_truncated",
    "n_eval_truncated",
}


def sentiment_pairs(n: int, seed: int) -> pd.DataFrame:
    """Pairs that differ in one word: a positive one in `chosen`, a negative one in `rejected`
    (the same subject). Eval pairs (another seed) are mostly combinations training never saw."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        subject, good, bad = SUBJECTS[rng.integers(8)], POSITIVE[rng.integers(8)], NEGATIVE[rng.integers(8)]
        rows.append(
            {"prompt": "Review:", "chosen": f" The {subject} was {good}.", "rejected": f" The {subject} was {bad}."}
        )
    return pd.DataFrame(rows)


def settings(**changes) -> RewardModelSettings:
    values = dict(
        max_steps=24, batch_size=8, learning_rate=1e-3, warmup_steps=0, max_length=32, logging_steps=8, seed=0
    )
    return RewardModelSettings(**{**values, **changes})


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    from dpolab.reward import train_reward_model

    out = tmp_path_factory.mktemp("reward")
    train, held_out = sentiment_pairs(64, seed=1), sentiment_pairs(32, seed=2)
    metrics = train_reward_model(tiny_model_dir, train, held_out, settings(), out, use_cpu=True, mlflow_active=False)
    return out, metrics, train, held_out


def test_saved_folder_is_plain_transformers_without_pickle(trained):
    out, _, _, _ = trained
    model_dir = out / "model"
    names = {p.name for p in model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer_config.json", "training_args.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl", ".pickle"))], names
    config = json.loads((model_dir / "config.json").read_text())
    assert len(config["id2label"]) == 1  # num_labels=1: one score
    assert config["architectures"] == ["LlamaForSequenceClassification"]
    assert config["pad_token_id"] is not None
    log = json.loads((out / "train_log.json").read_text())
    assert any("loss" in row for row in log)


def test_metrics_are_written_and_above_chance(trained):
    out, metrics, train, held_out = trained
    written = json.loads((out / "accuracy.json").read_text())
    assert written == metrics
    assert METRIC_FIELDS <= set(written)
    assert written["n_train_pairs"] == written["n_train_pairs_used"] == len(train) == 64
    assert written["n_eval_pairs"] == len(held_out) == 32
    assert written["n_train_truncated"] == written["n_eval_truncated"] == 0
    assert written["steps"] == 24 and np.isfinite(written["train_loss"])
    assert written["settings"] == asdict(settings())
    assert written["pairwise_accuracy"] > 0.8, written  # an easy task: 1.0 with this seed
    assert written["margin_mean"] > 0


def test_judge_reads_the_folder_with_fixed_scores(trained):
    """The folder loads with RewardModelJudge; two loads score identically, and reproduce the
    accuracy written at training time (it was measured through the same judge)."""
    from dpolab.judges import RewardModelJudge, preference_from_scores

    out, metrics, _, held_out = trained
    prompts, chosen, rejected = held_out["prompt"].tolist(), held_out["chosen"].tolist(), held_out["rejected"].tolist()
    first = RewardModelJudge("rm", str(out / "model"), max_length=32)
    second = RewardModelJudge("rm", str(out / "model"), max_length=32)
    scores = first.score(prompts, chosen)
    assert scores.shape == (32,) and np.isfinite(scores).all()
    np.testing.assert_array_equal(scores, second.score(prompts, chosen))
    accuracy = preference_from_scores(second.score(prompts, chosen), second.score(prompts, rejected)).mean()
    assert accuracy == metrics["pairwise_accuracy"]


def test_trainer_sees_the_judges_text(trained):
    """What RewardTrainer trains on is the judge's tokenisation of prompt + completion: no EOS
    appended, the same truncation to max_length."""
    from transformers import AutoTokenizer

    from dpolab.reward import tokenized_pairs

    out, _, _, _ = trained
    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    pairs = pd.DataFrame(
        {
            "prompt": ["Review:", "Review:"],
            "chosen": [" fine.", " a " + "very " * 40 + "good film."],
            "rejected": [" bad.", " a " + "very " * 40 + "bad film."],
        }
    )
    dataset, counts = tokenized_pairs(pairs, tokenizer, max_length=12)
    expected = tokenizer([p + c for p, c in zip(pairs["prompt"], pairs["chosen"])], truncation=True, max_length=12)
    # the long pair's sides coincide after 12 tokens: left out of training, counted
    assert counts == {"truncated": 1, "identical_after_truncation": 1}
    assert dataset["chosen_ids"] == expected["input_ids"][:1]
    assert dataset["chosen_ids"][0] == tokenizer("Review: fine.")["input_ids"]
    assert dataset["chosen_ids"][0][-1] != tokenizer.eos_token_id


def test_score_head_is_seeded(tiny_model_dir):
    from dpolab.reward import load_reward_base

    heads = [load_reward_base(tiny_model_dir, seed)[0].score.weight.detach().clone() for seed in (3, 3, 4)]
    assert heads[0].abs().sum() > 0
    assert np.array_equal(heads[0].numpy(), heads[1].numpy())
    assert not np.array_equal(heads[0].numpy(), heads[2].numpy())


@pytest.mark.parametrize("which", ["train", "eval"])
def test_empty_sets_are_refused(tmp_path, which):
    from dpolab.reward import train_reward_model

    pairs = {"train": sentiment_pairs(4, 0), "eval": sentiment_pairs(4, 1)}
    pairs[which] = pairs[which].iloc[:0]
    with pytest.raises(ValueError, match=f"{which} pairs are empty"):
        train_reward_model(
            tmp_path / "no-model",
            pairs["train"],
            pairs["eval"],
            settings(),
            tmp_path,
            use_cpu=True,
            mlflow_active=False,
        )


def test_bad_columns_are_refused(tmp_path):
    from dpolab.reward import train_reward_model

    train = sentiment_pairs(4, 0).drop(columns=["rejected"])
    with pytest.raises(ValueError, match=r"train pairs lack the column\(s\) \['rejected'\]"):
        train_reward_model(
            tmp_path, train, sentiment_pairs(4, 1), settings(), tmp_path, use_cpu=True, mlflow_active=False
        )
    held_out = sentiment_pairs(4, 1).assign(chosen=[" ok", None, " ok", " ok"])
    with pytest.raises(ValueError, match="1 row.* of `chosen` are not strings"):
        train_reward_model(
            tmp_path, sentiment_pairs(4, 0), held_out, settings(), tmp_path, use_cpu=True, mlflow_active=False
        )
