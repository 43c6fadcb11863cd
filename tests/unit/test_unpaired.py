"""Unpaired examples for KTO (dpolab.unpaired): pairs split into desirable and undesirable
completions, a user's file of labelled completions checked and read, the training order and the
paper's class-weight ratio."""

import pandas as pd
import pytest

from dpolab.unpaired import check_unpaired, read_unpaired, training_order, unpair, unpaired_stats
from helpers.examples import PAIRS as SIX_PAIRS

PAIRS = SIX_PAIRS.head(4)


def test_unpair_both_halves():
    examples = unpair(PAIRS, examples_per_pair="both", seed=0)
    assert len(examples) == 8 and examples["label"].sum() == 4
    desirable = examples[examples["label"]].set_index("pair_id")["completion"]
    undesirable = examples[~examples["label"]].set_index("pair_id")["completion"]
    assert desirable.sort_index().tolist() == PAIRS["chosen"].tolist()
    assert undesirable.sort_index().tolist() == PAIRS["rejected"].tolist()


def test_unpair_one_half_per_pair_is_seeded_and_never_gives_a_prompt_both_labels():
    many = pd.DataFrame(
        {
            "pair_id": range(200),
            "prompt": [f"p{i}" for i in range(200)],
            "chosen": [f"good {i}" for i in range(200)],
            "rejected": [f"bad {i}" for i in range(200)],
        }
    )
    one = unpair(many, examples_per_pair="one", seed=3)
    assert len(one) == 200 and one["pair_id"].is_unique
    assert one.groupby("prompt")["label"].nunique().max() == 1
    assert 70 < one["label"].sum() < 130  # a fair coin per pair
    assert one.equals(unpair(many, examples_per_pair="one", seed=3))
    assert not one.equals(unpair(many, examples_per_pair="one", seed=4))
    for _, row in one.iterrows():
        source = many.loc[row["pair_id"]]
        assert row["completion"] == (source["chosen"] if row["label"] else source["rejected"])


def test_kto_reads_a_seeded_shuffle_not_the_desirable_block_first():
    many = pd.DataFrame(
        {
            "pair_id": range(100),
            "prompt": [f"p{i}" for i in range(100)],
            "chosen": [f"good {i}" for i in range(100)],
            "rejected": [f"bad {i}" for i in range(100)],
        }
    )
    examples = unpair(many, examples_per_pair="both", seed=0)
    assert examples["label"].iloc[:100].all()  # unpair lists the desirable halves first
    ordered = training_order(examples, seed=0)
    assert sorted(ordered["completion"]) == sorted(examples["completion"])
    assert ordered.equals(training_order(examples, seed=0)) and not ordered.equals(training_order(examples, seed=1))
    batches = [ordered["label"].iloc[i : i + 8] for i in range(0, len(ordered), 8)]
    assert sum(b.nunique() == 2 for b in batches) >= len(batches) - 2  # nearly every batch of 8 mixes labels


def test_unpaired_checks_and_files(tmp_path):
    with pytest.raises(ValueError, match="feedback: column label must be boolean"):
        check_unpaired(pd.DataFrame({"prompt": ["a"], "completion": ["b"], "label": ["yes"]}), "feedback")
    with pytest.raises(ValueError, match="needs both desirable"):
        check_unpaired(pd.DataFrame({"prompt": ["a", "b"], "completion": ["b", "c"], "label": [1, 1]}), "feedback")
    frame = pd.DataFrame({"prompt": ["a", "b", "c"], "completion": ["x", "y", "z"], "label": [1, 0, 1]})
    frame.to_csv(tmp_path / "f.csv", index=False)
    frame.to_json(tmp_path / "f.jsonl", orient="records", lines=True)
    for name in ("f.csv", "f.jsonl"):
        read = read_unpaired(str(tmp_path / name), "train")
        assert read["label"].tolist() == [True, False, True] and read["completion"].tolist() == ["x", "y", "z"]


def test_unpaired_stats_weight_ratio():
    examples = pd.DataFrame(
        {"prompt": ["a", "a", "b", "c"], "completion": list("wxyz"), "label": [True, False, True, True]}
    )
    stats = unpaired_stats(examples, desirable_weight=1.0, undesirable_weight=2.0)
    # KTO paper Eq. 8: lambda_D n_D / (lambda_U n_U) = 1*3 / (2*1)
    assert stats["weighted_ratio"] == pytest.approx(1.5) and not stats["weighted_ratio_in_recommended_range"]
    assert (stats["desirable"], stats["undesirable"], stats["prompts"], stats["prompts_with_both_labels"]) == (
        3,
        1,
        3,
        1,
    )
    assert unpaired_stats(examples, desirable_weight=1.0, undesirable_weight=2.5)["weighted_ratio_in_recommended_range"]


def test_kto_examples_job_writes_examples_and_stats_from_pairs_or_a_file(tmp_path):
    import json

    from dpolab.unpaired import make_examples

    pairs = pd.DataFrame(
        {"pair_id": [0, 1], "prompt": ["p0", "p1"], "chosen": [" good", " fine"], "rejected": [" bad", " poor"]}
    )
    pairs.to_parquet(tmp_path / "pairs.parquet")
    settings = {
        "unpaired_data": None,
        "examples_per_pair": "both",
        "unpair_seed": 0,
        "desirable_weight": 1.0,
        "undesirable_weight": 1.0,
        "unpaired_split": "train",
    }
    stats = make_examples(
        settings,
        pairs_file=tmp_path / "pairs.parquet",
        examples_file=tmp_path / "ex.parquet",
        stats_file=tmp_path / "stats.json",
        log=False,
    )
    examples = pd.read_parquet(tmp_path / "ex.parquet")
    assert len(examples) == 4 and examples["label"].sum() == 2 and stats["source"] == "pairs"
    assert json.loads((tmp_path / "stats.json").read_text()) == stats
    examples.to_json(tmp_path / "mine.jsonl", orient="records", lines=True)
    from_file = make_examples(
        {**settings, "unpaired_data": str(tmp_path / "mine.jsonl")},
        pairs_file=None,
        examples_file=tmp_path / "ex2.parquet",
        stats_file=tmp_path / "stats2.json",
        log=False,
    )
    assert from_file["source"] == str(tmp_path / "mine.jsonl") and len(pd.read_parquet(tmp_path / "ex2.parquet")) == 4
