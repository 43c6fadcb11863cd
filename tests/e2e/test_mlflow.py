"""The MLflow store after the smoke study, run twice at once with several jobs side by side:
locally against the default sqlite store, and on a real SLURM against a real `mlflow server`
over HTTP (two of its jobs lost, then the study rerun; tests/e2e/test_slurm.py). Every job's run, metric point and
artifact is
counted against the study's own files, so nothing lost goes unnoticed."""

import json
from collections import Counter
from pathlib import Path

import mlflow
import pytest

from dpolab.config import read_study
from dpolab.plots import PLOTS
from dpolab.tracking import BENCHMARK_METRICS
from helpers.workflow import README_VARIANT, local_only, store

MODEL_FILES = {"model/model.safetensors", "model/config.json", "model/tokenizer.json", "model/training_args.json"}


def artifacts(client, run_id, path=None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def expected_artifacts(stage: str, config: dict) -> set[str]:
    temps = [f"{float(t):g}" for t in config["generation"]["temperatures"]]
    return {"job.json"} | {
        "data": {"data_card.json"},
        "judge": {"accuracy.json"},
        "base_model": {"model_card.json"},
        "sft": MODEL_FILES,
        "pairs": {"pairs_sample.json"},
        "reference": {"meta.json"},
        "dpo": MODEL_FILES,
        "kto_examples": {"unpaired_stats.json"},
        "generate": {f"generations/temp~{t}/samples.jsonl" for t in temps},
        "evaluate": {f"generations_scored/temp_{t}.json" for t in temps},
        "pairwise_judge": {"verdicts_llm.json"},
        "compare": {"win_rates.json", "win_rates.csv", "length_analysis.json"},
        "summary": {
            "summary_table.json",
            "summary.csv",
            "summary_by_seed.csv",
            "comparisons.csv",
            "summary.html",
            "plots/series.json",
        }
        | {f"plots/{p}.png" for p in PLOTS},
    }[stage]


def expected_points(run, study: Path, config: dict) -> dict[str, list[tuple[int, float]]]:
    """Every metric point the job must have logged, from the study's own files."""
    stage, points = run.data.tags["stage"], {}
    if stage in ("sft", "dpo"):
        # a training run is named <rule>/<policy>: dpo/..., kto/..., orpo/... (rule variants)
        folder = study / "sft" if stage == "sft" else study / "dpo" / run.info.run_name.split("/", 1)[1]
        for entry in json.loads((folder / "train_log.json").read_text()):  # the trainer's own log history
            for key, value in entry.items():
                if key != "step" and isinstance(value, (int, float)):
                    points.setdefault(key, []).append((entry["step"], float(value)))
    if stage == "evaluate":
        policy = run.info.run_name.removeprefix("evaluate/policy~")
        for t in config["generation"]["temperatures"]:
            metrics = json.loads((study / "evaluate" / policy / f"temp~{float(t):g}" / "metrics.json").read_text())
            for key, value in metrics.items():  # logged at the policy's training step (SFT: 0)
                if isinstance(value, (int, float)) and key not in ("beta", "seed", "temperature", "step"):
                    points[f"{key}/temp_{float(t):g}"] = [(metrics["step"], float(value))]
    return points


def check_store(work: Path) -> dict:
    """Assert the whole store and return what was counted, run by run: {run name: {"benchmarks",
    "metric_points", "artifacts"}}, the study's parent run under "study"."""
    study, info, client, runs = store(work)
    spec = read_study(work / "configs" / "smoke.yaml")
    config = spec.config
    parent = next(r for r in runs if r.info.run_id == info["parent_run_id"])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == info["parent_run_id"]]
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert {r.info.status for r in children} <= {"FINISHED", "KILLED", "FAILED"}  # nothing left RUNNING
    assert parent.info.status == "FINISHED" and parent.data.tags["stage"] == "study"
    assert client.get_experiment(info["experiment_id"]).tags["mlflow.experimentKind"] == "custom_model_development"
    # one finished run per job: one per (rule, wildcards), named from them
    names = Counter(r.info.run_name for r in finished)
    assert max(names.values()) == 1, names
    n_policies = len(spec.points) + 1
    # training jobs of every kind (the dpo rule, kto, orpo, a rule file's own) are stage dpo
    n_kto = len(spec.variant_rules.get("kto", []))
    assert Counter(r.data.tags["stage"] for r in finished) == {
        "data": 1,
        "judge": 1,
        "base_model": 1,
        "sft": 1,
        "pairs": 1,
        "reference": 1,
        "dpo": n_policies - 1,
        "kto_examples": n_kto,
        "generate": n_policies,
        "evaluate": n_policies,
        "pairwise_judge": 1,
        "compare": 1,
        "summary": 1,
    }
    counted = {run.info.run_name: Counter() for run in finished}
    for run in finished:
        tags = run.data.tags
        assert {"stage", "rule", "git_commit", "config_hash", "host", "pid", "benchmark_file", "log_file"} <= set(tags)
        if tags["stage"] in ("dpo", "generate", "evaluate"):
            assert tags["variant"] == "sft" or {"beta", "seed"} <= set(tags), run.info.run_name
        if tags["stage"] in ("generate", "evaluate"):
            assert tags["temperature"] == ",".join(f"{float(t):g}" for t in config["generation"]["temperatures"])
        # the job's resolved config: its own section(s) and the job's identity as params, all of it in job.json
        assert run.data.params["job.rule"] == tags["rule"]
        record = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/job.json")
        assert (
            record["rule"] == tags["rule"]
            and record["config"]["study"] == "smoke"
            and record["config"]["mlflow"]["log_models"]
        )
        # runtime and peak memory from the job's Snakemake benchmark file
        bench = (Path(work) / tags["benchmark_file"]).read_text().splitlines()
        row = dict(zip(bench[0].split("\t"), bench[-1].split("\t")))
        assert run.data.metrics[BENCHMARK_METRICS["s"]] == pytest.approx(float(row["s"]))
        assert run.data.metrics[BENCHMARK_METRICS["max_rss"]] == pytest.approx(float(row["max_rss"]))
        counted[run.info.run_name]["benchmarks"] += 1
        # every metric point
        for key, expected in expected_points(run, study, config).items():
            history = client.get_metric_history(run.info.run_id, key)
            logged = sorted((m.step, m.value) for m in history)
            assert [step for step, _ in logged] == [step for step, _ in sorted(expected)], (run.info.run_name, key)
            assert [v for _, v in logged] == pytest.approx([v for _, v in sorted(expected)], rel=1e-6), (
                run.info.run_name,
                key,
            )
            counted[run.info.run_name]["metric_points"] += len(history)
        # every artifact
        found = artifacts(client, run.info.run_id)
        assert expected_artifacts(tags["stage"], config) <= found, (
            run.info.run_name,
            expected_artifacts(tags["stage"], config) - found,
        )
        counted[run.info.run_name]["artifacts"] += len(found)
    # training curves: one point per logging step
    for run in finished:
        if run.data.tags["stage"] == "dpo":
            assert len(client.get_metric_history(run.info.run_id, "loss")) == config["dpo"]["max_steps"]
            assert run.data.params["loss.name"] == run.data.tags["loss"]
    # generations with their judges' scores as MLflow tables
    for run in finished:
        if run.data.tags["stage"] == "evaluate":
            table = client.load_table(
                info["experiment_id"], "generations_scored/temp_1.json", run_ids=[run.info.run_id]
            )
            assert len(table) == config["data"]["n_test_prompts"]
            assert {"prompt", "completion", "gold_score", "vader_score", "score_gold", "score_vader"} <= set(
                table.columns
            )
    # the parent: the study's config as params, its results as artifacts
    assert parent.data.params["study"] == "smoke" and parent.data.metrics[BENCHMARK_METRICS["s"]] > 0
    parent_artifacts = artifacts(client, parent.info.run_id)
    assert {
        "summary.csv",
        "summary_by_seed.csv",
        "comparisons.csv",
        "summary.html",
        "resolved_config.yaml",
        "summary_table.json",
        "study/length_analysis.json",
    } <= parent_artifacts
    assert {f"plots/{p}.png" for p in PLOTS} <= parent_artifacts
    counted["study"] = Counter(artifacts=len(parent_artifacts))
    return {name: dict(counts) for name, counts in counted.items()}


def totals(counted: dict) -> dict:
    return dict(sum(map(Counter, counted.values()), Counter(runs=len(counted))))


@pytest.fixture(scope="module")
def sqlite_counts(smoke_studies):
    return check_store(smoke_studies.sqlite)


def test_sqlite_store_holds_every_run_metric_point_and_artifact(smoke_studies, sqlite_counts):
    print("sqlite store:", totals(sqlite_counts))
    _, _, _, runs = store(smoke_studies.sqlite)
    assert all(r.info.status == "FINISHED" for r in runs)  # no failure in this run: every run finished


def test_server_store_holds_the_same_over_http(smoke_studies, sqlite_counts):
    _, info, client, runs = store(smoke_studies.server_work)
    assert info["tracking_uri"] == smoke_studies.server.url
    assert (smoke_studies.server.root / "artifacts").is_dir() and not (
        smoke_studies.server_work / "results" / "smoke" / "mlflow.db"
    ).exists()
    counted = check_store(smoke_studies.server_work)
    print("server store:", totals(counted))
    # run by run, the same counts as the local store's, but for the variants trained locally only
    assert counted == {name: counts for name, counts in sqlite_counts.items() if not local_only(name)}
    # the same runs with the same params, metrics and artifacts as the local store
    _, _, sqlite_client, sqlite_runs = store(smoke_studies.sqlite)
    by_name = {r.info.run_name: r for r in sqlite_runs if r.info.status == "FINISHED"}
    for run in (r for r in runs if r.info.status == "FINISHED"):
        local = by_name[run.info.run_name]
        # the study's parent holds the config: the docs' variant is defined in the local one only
        local_params = {key for key in local.data.params if not key.startswith(f"variants.{README_VARIANT}.")}
        assert set(run.data.params) == local_params, run.info.run_name
        assert set(run.data.metrics) == set(local.data.metrics), run.info.run_name
        assert artifacts(client, run.info.run_id) == artifacts(sqlite_client, local.info.run_id), run.info.run_name
