"""Preference datasets as they come: both of TRL's formats, implicit prompts, column maps, bad
rows named by their row, ties, splits without shared prompts, seeded subsamples, length limits."""

import json
import re

import pandas as pd
import pytest

from dpolab.preference_data import (
    card,
    check_columns,
    drop_ties,
    file_columns,
    held_out_split,
    read_table,
    subsample,
    to_pairs,
    within_lengths,
)


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


STANDARD = pd.DataFrame(
    {
        "question": ["What is DPO?", "Name a colour.", "Say hi."],
        "good": [" A preference loss.", " Blue.", " Hi!"],
        "bad": [" A car.", " Seven.", " Hi!"],  # the last pair is a tie
    }
)
CONVERSATIONAL = pd.DataFrame(
    {
        "prompt": [[user("What is DPO?")], [user("Name a colour.")]],
        "chosen": [[assistant("A preference loss.")], [assistant("Blue.")]],
        "rejected": [[assistant("A car.")], [assistant("Seven.")]],
    }
)
# Anthropic-HH's layout: whole conversations, the prompt implicit in both
HH = pd.DataFrame(
    {
        "chosen": [[user("Hi"), assistant("Hello!"), user("Tell me a joke."), assistant("Why did the chicken...")]],
        "rejected": [[user("Hi"), assistant("Hello!"), user("Tell me a joke."), assistant("No.")]],
    }
)


def test_standard_format_with_mapped_columns():
    pairs = to_pairs(STANDARD, {"prompt": "question", "chosen": "good", "rejected": "bad"})
    assert list(pairs.columns) == ["row", "prompt", "chosen", "rejected"] and pairs.attrs["format"] == "standard"
    assert pairs.loc[0, ["prompt", "chosen", "rejected"]].tolist() == ["What is DPO?", " A preference loss.", " A car."]


def test_conversational_format_and_an_implicit_prompt():
    pairs = to_pairs(CONVERSATIONAL)
    assert pairs.attrs["format"] == "conversational" and pairs["rejected"][1] == [assistant("Seven.")]
    hh = to_pairs(HH)  # TRL's extract_prompt: the longest shared beginning is the prompt
    assert hh["prompt"][0] == [user("Hi"), assistant("Hello!"), user("Tell me a joke.")]
    assert hh["chosen"][0] == [assistant("Why did the chicken...")] and hh["rejected"][0] == [assistant("No.")]


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda f: f.assign(chosen=[[{"role": "bot", "content": "x"}], f["chosen"][1]]),
            "row 0, chosen, message 0: unknown role 'bot' (roles: system, user, assistant)",
        ),
        (
            lambda f: f.assign(chosen=[f["chosen"][0], [{"role": "assistant", "content": 7}]]),
            "row 1, chosen, message 0: content must be a string, found int",
        ),
        (
            lambda f: f.assign(rejected=[f["rejected"][0], [assistant("A"), user("B")]]),
            "row 1, rejected: the response must end with an assistant turn, ends with 'user'",
        ),
        (
            lambda f: f.assign(prompt=[[user("Q"), assistant("A")], f["prompt"][1]]),
            "row 0, prompt: the prompt must end with a user turn, ends with 'assistant'",
        ),
        (
            lambda f: f.assign(rejected=[f["rejected"][0], "Seven."]),
            "row 1, rejected: a list of {role, content} messages was expected (conversational format), found a string",
        ),
    ],
)
def test_bad_rows_are_named_by_their_row(change, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        to_pairs(change(CONVERSATIONAL.copy()))


def test_a_standard_dataset_with_a_stray_conversation_is_refused():
    mixed = pd.DataFrame(
        {
            "prompt": ["What is DPO?", "Name a colour.", "Say hi."],
            "chosen": [" A preference loss.", " Blue.", [assistant("Hi!")]],
            "rejected": [" A car.", " Seven.", " Hello."],
        }
    )
    with pytest.raises(
        ValueError,
        match=r"row 2, chosen: a string was expected \(standard format, as row 0\), found a list of messages",
    ):
        to_pairs(mixed)
    with pytest.raises(ValueError, match=r"the dataset: lacks column\(s\) rejected"):
        to_pairs(mixed.drop(columns=["rejected"]))


def test_ties_are_dropped_and_counted_and_all_ties_refused():
    pairs, ties = drop_ties(to_pairs(STANDARD, {"prompt": "question", "chosen": "good", "rejected": "bad"}))
    assert ties == 1 and len(pairs) == 2 and pairs.attrs["format"] == "standard"
    same = pd.DataFrame({"prompt": ["a", "b"], "chosen": ["x", "y"], "rejected": ["x", "y"]})
    with pytest.raises(ValueError, match="every one of the 2 pairs has chosen == rejected"):
        drop_ties(to_pairs(same))


def test_held_out_split_keeps_each_prompt_on_one_side_and_is_seeded():
    many = pd.DataFrame(
        {
            "prompt": [f"p{i // 2}" for i in range(200)],  # two pairs per prompt
            "chosen": [f"good {i}" for i in range(200)],
            "rejected": [f"bad {i}" for i in range(200)],
        }
    )
    pairs = to_pairs(many)
    train, test = held_out_split(pairs, 0.1, seed=0)
    assert len(test) == 20 and len(train) == 180 and not set(train["prompt"]) & set(test["prompt"])
    again, _ = held_out_split(pairs, 0.1, seed=0)
    other, _ = held_out_split(pairs, 0.1, seed=1)
    assert train.equals(again) and not train.equals(other)
    with pytest.raises(ValueError, match="leaves none to train on"):
        held_out_split(pairs.head(2), 0.9, seed=0)


def test_subsample_is_seeded_and_keeps_source_order():
    pairs = to_pairs(
        pd.DataFrame({"prompt": [f"p{i}" for i in range(50)], "chosen": ["a"] * 50, "rejected": ["b"] * 50})
    )
    picked = subsample(pairs, 10, seed=3)
    assert len(picked) == 10 and picked["row"].is_monotonic_increasing
    assert picked.equals(subsample(pairs, 10, seed=3)) and not picked.equals(subsample(pairs, 10, seed=4))
    assert subsample(pairs, None, seed=0) is pairs and subsample(pairs, 500, seed=0) is pairs


def test_length_limits_in_the_policys_tokens():
    pairs = to_pairs(
        pd.DataFrame({"prompt": ["one", "one two three four"], "chosen": ["a b", "a"], "rejected": ["a", "a b c"]})
    )
    words = lambda value: len(value.split())  # noqa: E731 (a stand-in tokenizer: whitespace tokens)
    kept, dropped = within_lengths(pairs, words, max_prompt_length=3, max_length=None)
    assert dropped == 1 and kept["prompt"].tolist() == ["one"]
    kept, dropped = within_lengths(pairs, words, max_prompt_length=None, max_length=6)
    assert dropped == 1 and kept["prompt"].tolist() == ["one"]  # 4 prompt tokens + the longer response's 3 > 6
    with pytest.raises(ValueError, match="no pair fits the length limits"):
        within_lengths(pairs, words, max_prompt_length=0, max_length=None)


def test_every_file_layout_reads_the_same(tmp_path):
    frame = CONVERSATIONAL
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in frame.to_dict("records")))
    (tmp_path / "pairs.json").write_text(json.dumps(frame.to_dict("records")))
    frame.to_parquet(tmp_path / "pairs.parquet")
    from datasets import Dataset

    Dataset.from_pandas(frame).save_to_disk(str(tmp_path / "saved"))
    expected = to_pairs(frame)
    for source in ("pairs.jsonl", "pairs.json", "pairs.parquet", "saved"):
        pairs = to_pairs(read_table(str(tmp_path / source)))
        assert pairs.attrs["format"] == "conversational", source
        assert [json.dumps(list(map(dict, v))) for v in pairs["chosen"]] == [
            json.dumps(v) for v in expected["chosen"]
        ], source
    standard = tmp_path / "pairs.csv"
    STANDARD.to_csv(standard, index=False)
    assert file_columns(standard) == ["question", "good", "bad"]
    assert file_columns(tmp_path / "pairs.parquet") == ["prompt", "chosen", "rejected"]
    check_columns(file_columns(standard), {"chosen": "good", "rejected": "bad"}, str(standard))
    with pytest.raises(ValueError, match=r"pairs\.csv: lacks column\(s\) chosen, rejected \(has question, good, bad\)"):
        check_columns(file_columns(standard), {}, str(standard))


def test_unreadable_sources_name_the_file(tmp_path):
    with pytest.raises(ValueError, match=r"missing\.jsonl is not a file"):
        read_table(str(tmp_path / "missing.jsonl"))
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet")
    with pytest.raises(ValueError, match=r"cannot read .*garbage\.parquet as parquet"):
        read_table(str(garbage))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "a", "chosen": "b"\n')
    with pytest.raises(ValueError, match=r"cannot read .*broken\.jsonl as jsonl"):
        read_table(str(broken))


def test_card_counts():
    pairs, ties = drop_ties(to_pairs(STANDARD, {"prompt": "question", "chosen": "good", "rejected": "bad"}))
    summary = card(pairs, ties_dropped=ties)
    assert summary == {
        "pairs": 2,
        "prompts": 2,
        "format": "standard",
        "chosen_words_mean": 2.0,
        "rejected_words_mean": 1.5,
        "chosen_longer_share": 0.5,
        "ties_dropped": 1,
    }


# ---- the data stage of a preference study (preference_data.build) ---------------------------------
from dpolab.preference_data import ChatRenderer, build, instruction_text, response_text, sft_examples  # noqa: E402
from dpolab.settings import DataConfig  # noqa: E402


def test_ultrafeedback_layout_prompt_string_left_aside_with_prompt_null():
    """UltraFeedback-binarized: a plain-text `prompt` beside conversations that hold the user turn."""
    frame = pd.DataFrame(
        {
            "prompt": ["Name a colour."],
            "chosen": [[user("Name a colour."), assistant("Blue.")]],
            "rejected": [[user("Name a colour."), assistant("Seven.")]],
        }
    )
    pairs = to_pairs(frame, DataConfig(columns={"prompt": None}).column_map)
    assert pairs.attrs["format"] == "conversational" and pairs["prompt"][0] == [user("Name a colour.")]
    assert pairs["chosen"][0] == [assistant("Blue.")]


def test_readable_instruction_and_response_texts():
    assert instruction_text([{"role": "system", "content": "Be brief."}, user("Hi")]) == "Hi"
    assert (
        instruction_text([user("Hi"), assistant("Hello"), user("Joke?")])
        == "User: Hi\n\nAssistant: Hello\n\nUser: Joke?"
    )
    assert response_text([assistant("A"), user("B"), assistant("C")]) == "A\n\nC" and response_text(" x") == " x"


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def write_jsonl(path, frame):
    frame.to_json(path, orient="records", lines=True)
    return str(path)


def chat_rows(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "prompt": [[user(f"Question {i}?")] for i in range(n)],
            "chosen": [[assistant(f"A good answer {i}.")] for i in range(n)],
            "rejected": [
                [assistant(f"A bad answer {i}.")] if i % 10 else [assistant(f"A good answer {i}.")] for i in range(n)
            ],
        }
    )


def outputs(folder):
    names = ("pairs", "pair_stats", "prompts_test", "card", "sft_train", "reward_train", "reward_eval")
    suffix = {"pair_stats": ".json", "card": ".json"}
    return {name: folder / f"{name}{suffix.get(name, '.parquet')}" for name in names}


def test_build_a_conversational_study(tmp_path, tokenizer):
    cfg = DataConfig(
        source="preferences",
        path=write_jsonl(tmp_path / "p.jsonl", chat_rows(60)),
        test_fraction=0.2,
        n_train=20,
        reward_fraction=0.25,
    )
    out = outputs(tmp_path / "out")
    card_ = build(cfg, out, tokenizer, sft_source="chosen", sft_dataset=None, reward_model=True)
    pairs, test = pd.read_parquet(out["pairs"]), pd.read_parquet(out["prompts_test"])
    reward = pd.read_parquet(out["reward_train"])
    assert (
        card_["format"] == "conversational"
        and card_["counts"]["ties_dropped_train"] + card_["counts"]["ties_dropped_test"] == 6
    )
    assert (
        len(pairs) == 20
        and not set(pairs["prompt"]) & set(reward["prompt"])
        and not set(pairs["prompt"]) & set(test["prompt"])
    )
    # the chat template: the prompt ends with the assistant header, each response with the end-of-turn token
    assert (
        pairs["prompt"].str.endswith("<|im_start|>assistant\n").all()
        and pairs["chosen"].str.endswith(tokenizer.eos_token).all()
    )
    assert test["instruction"].str.startswith("Question").all() and test["chosen"].str.startswith("A good answer").all()
    assert (reward["chosen"].str.startswith("A good")).all()  # the reward model scores the response's text
    sft = pd.read_parquet(out["sft_train"])
    assert list(sft.columns) == ["prompt", "completion"] and (sft["completion"] == pairs["chosen"]).all()
    assert json.loads(out["pair_stats"].read_text())["pairs"] == 20


def test_build_refuses_bad_data_with_the_row(tmp_path, tokenizer):
    rows = chat_rows(12)
    rows.at[7, "chosen"] = [{"role": "bot", "content": "x"}]
    cfg = DataConfig(source="preferences", path=write_jsonl(tmp_path / "bad.jsonl", rows))
    with pytest.raises(ValueError, match=r"data.path: .*bad.jsonl: row 7, chosen, message 0: unknown role 'bot'"):
        build(cfg, outputs(tmp_path / "out"), tokenizer, sft_source="none", sft_dataset=None, reward_model=False)
    tied = chat_rows(12).assign(rejected=lambda f: f["chosen"])
    cfg = DataConfig(source="preferences", path=write_jsonl(tmp_path / "tied.jsonl", tied))
    with pytest.raises(ValueError, match="chosen == rejected"):
        build(cfg, outputs(tmp_path / "out2"), tokenizer, sft_source="none", sft_dataset=None, reward_model=False)
    cfg = DataConfig(source="preferences", path=write_jsonl(tmp_path / "ok.jsonl", chat_rows(12)), max_length=3)
    with pytest.raises(ValueError, match="no pair fits the length limits"):
        build(cfg, outputs(tmp_path / "out3"), tokenizer, sft_source="none", sft_dataset=None, reward_model=False)


def test_conversational_data_needs_a_chat_template(tokenizer):
    class NoTemplate:
        chat_template = None

    with pytest.raises(
        ValueError, match="^model: the model's tokenizer has no chat template, and the data is conversational"
    ):
        ChatRenderer(NoTemplate(), "conversational")
    assert ChatRenderer(NoTemplate(), "standard").pair("p", " c", " r") == ("p", " c", " r")


def test_sft_dataset_forms(tmp_path, tokenizer):
    messages = pd.DataFrame({"messages": [[user("Hi"), assistant("Hello")]] * 3})
    text = sft_examples(
        {"path": write_jsonl(tmp_path / "m.jsonl", messages), "split": "train", "n": 2}, tokenizer, seed=0
    )
    assert list(text.columns) == ["text"] and len(text) == 2 and "<|im_start|>assistant\nHello" in text["text"][0]
    plain = pd.DataFrame({"prompt": ["Q:"] * 3, "completion": [" A"] * 3})
    assert list(
        sft_examples({"path": write_jsonl(tmp_path / "pc.jsonl", plain), "split": "train"}, tokenizer, seed=0).columns
    ) == ["prompt", "completion"]
    with pytest.raises(ValueError, match="sft.dataset.path: .* needs a messages column"):
        sft_examples(
            {"path": write_jsonl(tmp_path / "x.jsonl", pd.DataFrame({"q": ["a"]})), "split": "train"}, tokenizer, seed=0
        )


def test_a_hub_dataset_without_network_is_refused_clearly(monkeypatch):
    """The Hub path is real code (datasets.load_dataset with split and revision); offline it ends in
    one message naming the key and the way out."""
    from dpolab.preference_data import read_pairs

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(
        ValueError,
        match=r"^data.path: dpolab-test/no-such-dataset: cannot load Hub dataset "
        r"'dpolab-test/no-such-dataset' \(split 'train_prefs'\): .*offline, use a local copy",
    ):
        read_pairs("dpolab-test/no-such-dataset", "train_prefs", "main", {}, "data.path")


def test_the_readme_layouts_are_accepted():
    """Every ```jsonl example of docs/preference-data.md reads as pairs, in the
    format it is shown as (a wrapped object is one line in a file)."""
    import re

    from dpolab.config import ROOT

    blocks = re.findall(r"^```jsonl\n(.*?)^```", (ROOT / "docs" / "preference-data.md").read_text(), flags=re.S | re.M)
    assert len(blocks) == 5
    formats = []
    for block in blocks:
        rows = [json.loads(obj) for obj in re.split(r"\n(?=\{)", block.strip())]
        frame = pd.DataFrame(rows)
        if "question" in frame:
            mapping = {"prompt": "question", "chosen": "good", "rejected": "bad"}
        elif "prompt" in frame and isinstance(rows[0]["prompt"], str) and not isinstance(rows[0]["chosen"], str):
            mapping = {"prompt": None}  # UltraFeedback's plain-text copy of the user turn, set aside
        else:
            mapping = {}
        pairs = to_pairs(frame, mapping)
        assert pairs["chosen"].map(lambda c: "Blue" in (c if isinstance(c, str) else c[-1]["content"])).any()
        formats.append(pairs.attrs["format"])
    assert formats == ["standard", "conversational", "standard", "conversational", "standard"]
