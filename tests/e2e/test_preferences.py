"""Preference-dataset studies run for real (data.source: preferences): a conversational file through
the chat template (SFT on the chosen responses, the grid's registry loss and both rule variants) and
a standard one (SFT on a separate prompt/completion file), each judged by a reward model trained in
the study and by an LLM judge over HTTP: a real vLLM OpenAI-compatible server of the smoke model on
127.0.0.1. Then the HTTP judge's verdict cache: a rerun pays for nothing, a server that dies
mid-job fails the job with the verdicts kept, and the rerun completes with only the missing ones."""

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dpolab.judge_server import VllmServer
from helpers.workflow import BIN, copy_workflow

JUDGE_MODEL = "tiny-judge"
CONVERSATIONAL = {
    "study": "pref_chat",
    "model": {
        "source": "scratch",
        "scratch": {
            "hidden_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 256,
            "seed": 0,
        },
    },
    "data": {
        "source": "preferences",
        "path": "configs/data/imdb_preferences.jsonl",
        "n_train": 32,
        "n_test": 12,
        "max_length": 96,
    },
    "sft": {"data": "chosen", "max_steps": 2, "batch_size": 4, "max_length": 96, "logging_steps": 1},
    "reward_model": {"max_steps": 4, "batch_size": 4, "max_length": 96, "logging_steps": 1},
    "variants": {"dpo": {"loss": "dpo"}, "kto": {"rule": "kto"}, "orpo": {"rule": "orpo"}},
    "grid": {"variants": ["dpo", "kto", "orpo"], "betas": [0.1], "seeds": [0]},
    "dpo": {"max_steps": 2, "batch_size": 4, "max_length": 96, "logging_steps": 1},
    "generation": {"temperatures": [0.0, 1.0], "max_new_tokens": 8},
    "judges": {"rm": {"kind": "reward_model", "source": "study"}},  # + the HTTP judge, whose port the fixture knows
    "evaluation": {"bootstrap_resamples": 200, "lc_resamples": 20},
}
STANDARD = {
    **CONVERSATIONAL,
    "study": "pref_standard",
    "data": {
        "source": "preferences",
        "path": "prefs_standard.jsonl",
        "test_fraction": 0.2,
        "n_train": 24,
        "n_test": 8,
        "columns": {"prompt": "question", "chosen": "good", "rejected": "bad"},
    },
    "sft": {
        "data": "dataset",
        "dataset": {"path": "sft_prompt_completion.parquet", "n": 32},
        "max_steps": 2,
        "batch_size": 4,
        "max_length": 64,
        "logging_steps": 1,
    },
    "variants": {"dpo": {"loss": "dpo"}},
    "grid": {"variants": ["dpo"], "betas": [0.1], "seeds": [0]},
    "generation": {"temperatures": [1.0], "max_new_tokens": 8},
}


@dataclass
class PreferenceStudies:
    chat: Path
    standard: Path
    server: VllmServer
    logs: dict


ENV = dict(os.environ, OMP_NUM_THREADS="1")


def command(config: str, *extra: str) -> list[str]:
    return [str(BIN / "snakemake"), "--cores", "2", "--max-threads", "1", "--configfile", config, *extra]


def snakemake(work: Path, config: str, *extra: str, timeout: float = 1500) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(config, *extra),
        cwd=work,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


def write_config(work: Path, name: str, config: dict, server: VllmServer) -> str:
    config = json.loads(json.dumps(config))
    config["judges"]["llm"] = {
        "kind": "llm_http",
        "base_url": server.url,
        "model": JUDGE_MODEL,
        "max_concurrency": 4,
        "max_retries": 1,
        "timeout": 30,
    }
    (work / "configs" / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return f"configs/{name}.yaml"


def standard_files(work: Path) -> None:
    """A standard-format file with its own column names, and a separate SFT file (prompt/completion)."""
    subprocess.run(
        [
            str(BIN / "python"),
            "-m",
            "dpolab.example_data",
            "--n",
            "120",
            "--seed",
            "1",
            "--format",
            "standard",
            str(work / "standard.jsonl"),
        ],
        check=True,
    )
    rows = pd.read_json(work / "standard.jsonl", lines=True)
    rows.rename(columns={"prompt": "question", "chosen": "good", "rejected": "bad"}).to_json(
        work / "prefs_standard.jsonl", orient="records", lines=True
    )
    pd.DataFrame({"prompt": rows["prompt"] + "\n", "completion": rows["chosen"]}).to_parquet(
        work / "sft_prompt_completion.parquet"
    )


@pytest.fixture(scope="session")
def preference_studies(tmp_path_factory, vllm_model_dir):
    root = tmp_path_factory.mktemp("preferences")
    server = VllmServer(vllm_model_dir, served_model_name=JUDGE_MODEL, max_model_len=512, work=root / "server").start()
    try:
        chat, standard = copy_workflow(root / "chat"), copy_workflow(root / "standard")
        standard_files(standard)
        chat_config = write_config(chat, "pref_chat", CONVERSATIONAL, server)
        standard_config = write_config(standard, "pref_standard", STANDARD, server)
        with open(root / "chat.log", "w") as chat_log, open(root / "standard.log", "w") as standard_log:
            runs = [
                subprocess.Popen(command(chat_config), cwd=chat, env=ENV, stdout=chat_log, stderr=subprocess.STDOUT),
                subprocess.Popen(
                    command(standard_config), cwd=standard, env=ENV, stdout=standard_log, stderr=subprocess.STDOUT
                ),
            ]
            codes = [run.wait(timeout=1800) for run in runs]
        logs = {"chat": (root / "chat.log").read_text(), "standard": (root / "standard.log").read_text()}
        assert codes == [0, 0], {k: v[-6000:] for k, v in logs.items()}
        yield PreferenceStudies(chat, standard, server, logs)
    finally:
        server.stop()


def summary(work: Path, study: str) -> pd.DataFrame:
    return pd.read_csv(work / "results" / study / "summary.csv")


@pytest.mark.parametrize("kind", ["chat", "standard"])
def test_summary_under_both_judges_against_sft_and_chosen(preference_studies, kind):
    work = getattr(preference_studies, kind)
    study = "pref_chat" if kind == "chat" else "pref_standard"
    config = CONVERSATIONAL if kind == "chat" else STANDARD
    table = summary(work, study)
    n_policies = 1 + len(config["grid"]["variants"])
    assert len(table) == n_policies * len(config["generation"]["temperatures"]) * 2
    assert sorted(table["judge"].unique()) == ["llm", "rm"]
    grid = table[table["variant"] != "sft"]
    for column in ("win_rate", "lc_win_rate", "win_rate_vs_chosen", "reward_mean", "kl_mean", "length_ratio_vs_sft"):
        assert grid[column].notna().all(), column
    # every policy (SFT too) is compared with the dataset's chosen responses under both judges
    assert table["win_rate_vs_chosen"].between(0, 1).all()
    assert table["vader_mean"].isna().all()  # no IMDb judges in a preference study
    llm = grid[grid["judge"] == "llm"]
    assert (llm["first_slot_share"].between(0, 1) | llm["tie_share"].eq(1)).all()
    results = work / "results" / study
    assert not (results / "judge").exists() and not (results / "logs" / "pairs.log").exists()  # no IMDb stages


def test_data_card_splits_and_the_reward_model(preference_studies):
    results = preference_studies.chat / "results" / "pref_chat"
    card = json.loads((results / "data" / "data_card.json").read_text())
    assert card["format"] == "conversational" and card["chat_template"] and card["sft"]["source"] == "chosen"
    assert card["policy_pairs"]["pairs"] == 32 and card["test_prompts"] == 12
    assert set(card["counts"]) >= {"ties_dropped_train", "too_long_dropped_train", "rows_train_split"}
    pairs = pd.read_parquet(results / "pairs" / "pairs.parquet")
    reward = pd.read_parquet(results / "data" / "reward_train.parquet")
    test = pd.read_parquet(results / "data" / "prompts_test.parquet")
    # the policies, the reward model and the test prompts never share a prompt
    assert not set(pairs["prompt"]) & set(reward["prompt"]) and not set(pairs["prompt"]) & set(test["prompt"])
    assert (
        pairs["prompt"].str.endswith("<|im_start|>assistant\n").all()
        and pairs["chosen"].str.endswith("<|im_end|>").all()
    )
    assert (test["instruction"] != test["prompt"]).all()  # judges read the instruction, not the chat markup
    accuracy = json.loads((results / "reward_model" / "accuracy.json").read_text())
    assert 0 <= accuracy["pairwise_accuracy"] <= 1 and accuracy["n_eval_pairs"] > 0
    final_card = json.loads((results / "data_card.json").read_text())  # the data card with the trained judge's accuracy
    assert final_card["trained_judge"]["pairwise_accuracy"] == accuracy["pairwise_accuracy"]
    standard = json.loads(
        (preference_studies.standard / "results" / "pref_standard" / "data" / "data_card.json").read_text()
    )
    assert (
        standard["format"] == "standard"
        and standard["sft"]["source"] == "dataset"
        and standard["sft"]["examples"] == 32
    )


def verdict_cache(work: Path, study: str) -> Path:
    return work / "results" / study / "cache" / "verdicts" / "llm.jsonl"


def http_counters(work: Path, study: str) -> dict:
    log = (work / "results" / study / "logs" / "pairwise_judge" / "llm.log").read_text()
    line = [entry for entry in log.splitlines() if entry.startswith("HTTP judge: ")][-1]
    return eval(line.removeprefix("HTTP judge: "), {})  # a dict of ints the job printed


def test_http_verdicts_are_paid_once_and_survive_a_server_that_dies(preference_studies):
    work, config, server = preference_studies.standard, "configs/pref_standard.yaml", preference_studies.server
    cache = verdict_cache(work, "pref_standard")
    entries = cache.read_text().splitlines()
    first = http_counters(work, "pref_standard")
    assert first["requests_sent"] == len(entries) > 0 and first["cache_hits"] == 0
    # a rerun of the judge reads every verdict from the cache: no request
    rerun = snakemake(work, config, "--forcerun", "pairwise_judge")
    assert rerun.returncode == 0, rerun.stdout[-4000:]
    again = http_counters(work, "pref_standard")  # each distinct (prompt, first, second) is one entry and one request
    assert again["requests_sent"] == 0 and again["cache_hits"] >= len(entries)
    # the server dies mid-study, with a third of the verdicts still to come: once the workflow has
    # been parsed (its endpoint check passed) and before the judge job asks; the job fails, naming it
    missing = len(entries) // 3
    cache.write_text("\n".join(entries[missing:]) + "\n")
    launch = subprocess.Popen(
        command(config, "--forcerun", "pairwise_judge"),
        cwd=work,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []
    for line in launch.stdout:
        seen.append(line)
        if line.startswith("Building DAG of jobs"):
            server.kill()
            break
    try:
        output = "".join(seen) + launch.communicate(timeout=600)[0]
        assert launch.returncode != 0 and "Building DAG of jobs" in output, output[-4000:]
        log = (work / "results" / "pref_standard" / "logs" / "pairwise_judge" / "llm.log").read_text()
        assert "judges.llm" in log and server.url.removesuffix("/v1") in log and "rerun" in log
        assert len(cache.read_text().splitlines()) == len(entries) - missing  # nothing lost
    finally:
        server.start()
    # the relaunch (forced: this study's later outputs predate the failure) pays for the missing verdicts alone
    resumed = snakemake(work, config, "--forcerun", "pairwise_judge")
    assert resumed.returncode == 0, resumed.stdout[-4000:]
    assert (work / "results" / "pref_standard" / "compare" / "pairwise" / "llm.parquet").is_file()
    counters = http_counters(work, "pref_standard")
    assert counters["requests_sent"] == missing and counters["cache_hits"] >= len(entries) - missing
    assert len(cache.read_text().splitlines()) == len(entries)


def test_a_judge_server_that_is_down_stops_the_study_before_any_job(preference_studies, tmp_path):
    from dpolab.judge_server import free_port

    work = preference_studies.standard
    config = yaml.safe_load((work / "configs" / "pref_standard.yaml").read_text())
    config["study"] = "pref_down"
    config["judges"]["llm"]["base_url"] = f"http://127.0.0.1:{free_port()}/v1"
    (work / "configs" / "pref_down.yaml").write_text(yaml.safe_dump(config))
    run = snakemake(work, "configs/pref_down.yaml", "-n")
    assert run.returncode != 0 and "judges.llm" in run.stdout and "no server answers" in run.stdout
    assert not (work / "results" / "pref_down").exists()
