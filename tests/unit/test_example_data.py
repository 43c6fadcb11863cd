"""The offline example preference file (configs/data/imdb_preferences.jsonl): it is what the
builder makes today, valid conversational data, chosen positive and rejected negative reviews,
and the same arguments give the same bytes."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from dpolab.config import ROOT
from dpolab.data import load_imdb_reviews
from dpolab.example_data import (
    INSTRUCTIONS,
    SYSTEM_PROMPTS,
    build_imdb_preferences,
    dumps_jsonl,
    imdb_preference_table,
    write_jsonl,
)
from dpolab.preference_data import drop_ties, to_pairs

SHIPPED = ROOT / "configs" / "data" / "imdb_preferences.jsonl"


@pytest.fixture(scope="module")
def reviews():
    return load_imdb_reviews()


@pytest.fixture(scope="module")
def table(reviews):
    return imdb_preference_table(600, 0, 30, reviews=reviews)


@pytest.fixture(scope="module")
def rows(reviews):
    return build_imdb_preferences(600, 0, 30, reviews=reviews)


def test_shipped_file_is_a_fresh_build(rows):
    assert SHIPPED.read_bytes() == dumps_jsonl(rows).encode("utf-8"), (
        "configs/data/imdb_preferences.jsonl has drifted from its builder: rebuild it with "
        "python -m dpolab.example_data --n 600 --seed 0 configs/data/imdb_preferences.jsonl"
    )
    assert len(SHIPPED.read_bytes()) < 500_000
    assert SHIPPED.read_text(encoding="utf-8").count("\n") == 600


def test_shipped_file_is_valid_conversational_data():
    pairs = to_pairs(pd.read_json(SHIPPED, lines=True))
    assert pairs.attrs["format"] == "conversational" and len(pairs) == 600
    assert drop_ties(pairs)[1] == 0
    with_system = 0
    for prompt, chosen, rejected in zip(pairs["prompt"], pairs["chosen"], pairs["rejected"]):
        roles = [m["role"] for m in prompt]
        assert roles in (["user"], ["system", "user"])
        with_system += roles[0] == "system"
        assert roles[0] != "system" or prompt[0]["content"] in SYSTEM_PROMPTS
        for response in (chosen, rejected):
            assert [m["role"] for m in response] == ["assistant"]
            assert isinstance(response[0]["content"], str) and 6 <= len(response[0]["content"].split()) <= 30
        assert all(isinstance(m["content"], str) and m["content"].strip() for m in [*prompt, *chosen, *rejected])
    assert 60 < with_system < 180  # about one prompt in five


def test_each_instruction_names_the_first_words_of_its_chosen_response(rows):
    templates = [t.split("{start}") for t in INSTRUCTIONS]
    starts = set()
    for row in rows:
        instruction, chosen = row["prompt"][-1]["content"], row["chosen"][0]["content"]
        head, tail = next((h, t) for h, t in templates if instruction.startswith(h) and instruction.endswith(t))
        start = instruction[len(head) : len(instruction) - len(tail)]
        assert 1 <= len(start.split()) <= 3 and chosen.startswith(start + " ")
        starts.add(start)
    assert len(starts) > 300  # prompts vary


def test_chosen_reviews_are_positive_and_rejected_negative(table, reviews, rows):
    assert (reviews["label"].iloc[table["chosen_review"]] == 1).all()
    assert (reviews["label"].iloc[table["rejected_review"]] == 0).all()
    # without replacement, and each response is its source review's opening
    assert table["chosen_review"].is_unique and table["rejected_review"].is_unique
    for position, text in zip(table["chosen_review"], table["chosen"]):
        assert reviews["text"].iat[position].startswith(text)
    for position, text in zip(table["rejected_review"], table["rejected"]):
        assert reviews["text"].iat[position].startswith(text)
    assert [r["chosen"][0]["content"] for r in rows] == table["chosen"].tolist()
    assert [r["rejected"][0]["content"] for r in rows] == table["rejected"].tolist()


def test_standard_format_holds_the_same_pairs_as_strings(reviews, rows, tmp_path):
    standard = build_imdb_preferences(600, 0, 30, format="standard", reviews=reviews)
    path = write_jsonl(standard, tmp_path / "standard.jsonl")
    pairs = to_pairs(pd.read_json(path, lines=True))
    assert pairs.attrs["format"] == "standard" and len(pairs) == 600
    for plain, conversational in zip(standard, rows):
        assert plain == {
            "prompt": conversational["prompt"][-1]["content"],
            "chosen": conversational["chosen"][0]["content"],
            "rejected": conversational["rejected"][0]["content"],
        }


def test_same_arguments_same_bytes_other_seed_other_pairs(reviews, rows):
    again = build_imdb_preferences(600, 0, 30, reviews=reviews)
    assert dumps_jsonl(again) == dumps_jsonl(rows)
    other = build_imdb_preferences(600, 1, 30, reviews=reviews)
    assert {r["chosen"][0]["content"] for r in other} != {r["chosen"][0]["content"] for r in rows}
    short = build_imdb_preferences(20, 3, 12, reviews=reviews)
    assert len(short) == 20 and all(len(r["rejected"][0]["content"].split()) <= 12 for r in short)
    # every line one JSON object, text written as UTF-8 rather than \u escapes
    text = dumps_jsonl(rows)
    lines = text.split("\n")
    assert lines[-1] == "" and all(json.loads(line) for line in lines[:-1])
    assert "\\u" not in text and not text.isascii()


def test_bad_arguments_are_refused(reviews):
    with pytest.raises(ValueError, match="format"):
        build_imdb_preferences(5, format="sharegpt", reviews=reviews)
    with pytest.raises(ValueError, match="n must be"):
        build_imdb_preferences(0, reviews=reviews)
    with pytest.raises(ValueError, match="exceeds"):
        build_imdb_preferences(20_000, reviews=reviews)


def test_command_line_writes_the_file(reviews, tmp_path):
    out = tmp_path / "sub" / "pairs.jsonl"
    command = [sys.executable, "-m", "dpolab.example_data", "--n", "8", "--seed", "5", "--format", "standard", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    assert "wrote 8 standard pairs" in done.stdout
    expected = build_imdb_preferences(8, 5, format="standard", reviews=reviews)
    assert out.read_text(encoding="utf-8") == dumps_jsonl(expected)
