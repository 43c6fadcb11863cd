import numpy as np
import pandas as pd
import pytest

from dpolab.data import (
    DataConfig,
    assign_splits,
    build,
    clean_review,
    human_continuation,
    load_imdb_reviews,
    make_data,
    make_prompts,
)


def test_split_is_deterministic_and_disjoint():
    a = assign_splits(1000, seed=3, eval_fraction=0.1, test_fraction=0.2)
    b = assign_splits(1000, seed=3, eval_fraction=0.1, test_fraction=0.2)
    c = assign_splits(1000, seed=4, eval_fraction=0.1, test_fraction=0.2)
    assert (a == b).all()
    assert not (a == c).all()
    assert {s: int((a == s).sum()) for s in ("train", "eval", "test")} == {"train": 700, "eval": 100, "test": 200}


def test_prompts_are_prefixes_of_2_to_8_tokens():
    reviews = pd.DataFrame({"text": [f"w{i} " * 20 for i in range(50)], "label": [i % 2 for i in range(50)]})
    prompts = make_prompts(reviews, 40, np.random.default_rng(0), 2, 8, 12)
    lengths = prompts["prompt"].str.split().str.len()
    assert lengths.between(2, 8).all() and lengths.nunique() > 3
    assert prompts["prompt"].is_unique  # distinct reviews
    again = make_prompts(reviews, 40, np.random.default_rng(0), 2, 8, 12)
    pd.testing.assert_frame_equal(prompts, again)
    # the dataset's own response continues the prompt to 12 words in all
    assert ((prompts["prompt"] + prompts["chosen"]).str.split().str.len() == 12).all()


def test_human_continuation_ends_with_the_opening_sentences():
    text = "I loved this film. It was great fun and the cast shines. Then it dragged on and on."
    assert human_continuation(text, 2, 12) == " this film. It was great fun and the cast shines."
    # first sentence longer than the word budget: cut at max_words
    assert human_continuation("one two three four five six", 2, 4) == " three four"
    assert human_continuation("one two", 2, 4) == ""


def test_imdb_reviews_from_package():
    reviews = load_imdb_reviews()
    assert len(reviews) == 25000
    assert reviews["label"].mean() == pytest.approx(0.5)
    assert not reviews["text"].str.contains("<br").any()
    assert clean_review("a<br /><br />b  c") == "a b c"


def test_build_writes_the_same_data_twice(tmp_path):
    cfg = DataConfig(n_train_prompts=20, n_test_prompts=10, n_sft_texts=30)
    card = build(cfg, tmp_path / "a")
    # the data job's own function: build() into the card's folder (MLflow logging off here)
    assert make_data(cfg, tmp_path / "b" / "data_card.json", log=False) == card
    assert (tmp_path / "b" / "data_card.json").read_text() == (tmp_path / "a" / "data_card.json").read_text()
    for name in ("prompts_train", "prompts_test", "sft_train"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(tmp_path / "a" / f"{name}.parquet"), pd.read_parquet(tmp_path / "b" / f"{name}.parquet")
        )
    assert card["prompts"] == {"train": 20, "test": 10}
    reviews = pd.read_parquet(tmp_path / "a" / "reviews.parquet")
    test_texts = set(reviews.loc[reviews["split"] == "test", "text"])
    assert all(
        any(t.startswith(p) for t in test_texts)
        for p in pd.read_parquet(tmp_path / "a" / "prompts_test.parquet")["prompt"][:3]
    )


def test_opening_sentences_end_on_a_sentence_boundary():
    from dpolab.data import opening_sentences

    text = "Great film. I loved every minute of it! The ending, though, was far too long and slow."
    assert opening_sentences(text, 3) == "Great film."
    assert opening_sentences(text, 9) == "Great film. I loved every minute of it!"
    assert opening_sentences(text, 100) == text
    assert opening_sentences("One very long first sentence here", 3) is None
