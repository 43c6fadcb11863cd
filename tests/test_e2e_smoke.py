"""One real run of the smoke study through every rule (TRL, vLLM, MLflow sqlite store),
then checks of summary.csv, plots and the MLflow runs with their metrics."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from dpolab.config import ROOT, grid_points, load_config

pytestmark = pytest.mark.e2e
RULES = ("mlflow_study", "data", "judge", "base_model", "sft", "pairs", "reference", "dpo", "generate", "evaluate", "summary")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """Run the smoke study in a copy of the workflow so the test never touches results/."""
    work = tmp_path_factory.mktemp("smoke")
    for name in ("Snakefile", "workflow", "configs", "profiles"):
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, work / name)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    snakemake = Path(sys.executable).with_name("snakemake")
    result = subprocess.run(
        [str(snakemake), "--cores", "2", "--configfile", "configs/smoke.yaml"],
        cwd=work, env=env, capture_output=True, text=True, timeout=1500,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return work, load_config(work / "configs" / "smoke.yaml")


def test_summary_has_every_policy_and_temperature(smoke):
    work, config = smoke
    table = pd.read_csv(work / "results" / "smoke" / "summary.csv")
    points = grid_points(config)
    temperatures = config["generation"]["temperatures"]
    assert len(table) == (len(points) + 1) * len(temperatures)
    required = ["policy", "variant", "beta", "seed", "temperature", "reward_mean", "reward_ci_low", "reward_ci_high",
                "kl_mean", "win_rate", "win_rate_ci_low", "win_rate_ci_high", "length_mean"]
    assert set(required) <= set(table.columns)
    sft = table[table["variant"] == "sft"]
    assert len(sft) == len(temperatures) and sft["beta"].isna().all()
    assert (sft["win_rate"] == 0.5).all() and (sft["kl_mean"] == 0).all()
    grid = table[table["variant"] != "sft"]
    assert set(zip(grid["variant"], grid["beta"])) == {(p.variant, p.beta) for p in points}
    numeric = grid[[c for c in required if c not in ("policy", "variant")]]
    assert numeric.map(lambda v: math.isfinite(v)).all().all()
    assert ((table["reward_ci_low"] <= table["reward_mean"]) & (table["reward_mean"] <= table["reward_ci_high"])).all()
    assert table["win_rate"].between(0, 1).all() and (table["length_mean"] > 0).all()


def test_plots_and_job_records(smoke):
    work, _ = smoke
    study = work / "results" / "smoke"
    for name in ("reward_vs_kl", "win_rate_vs_beta", "length_vs_beta"):
        png = study / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    # every rule left a log and a benchmark
    for rule in RULES:
        assert list((study / "logs").glob(f"**/{rule}*")) or (study / "logs" / rule).is_dir(), rule
        assert list((study / "benchmarks").glob(f"**/{rule}*")) or (study / "benchmarks" / rule).is_dir(), rule
    assert not list(study.rglob("*.pkl")) and not list(study.rglob("*.pickle"))
    accuracy = json.loads((study / "judge" / "accuracy.json").read_text())
    assert accuracy["gold_accuracy_full"] > 0.75  # a real classifier, not chance
    pairs = pd.read_parquet(study / "pairs" / "pairs.parquet")
    assert (pairs["chosen_score"] > pairs["rejected_score"]).all()


def test_mlflow_runs_and_metrics(smoke):
    work, config = smoke
    study = work / "results" / "smoke"
    info = json.loads((study / "mlflow" / "study_run.json").read_text())
    assert info["tracking_uri"] == f"sqlite:///{study.resolve() / 'mlflow.db'}"
    client = MlflowClient(info["tracking_uri"])
    experiment = client.get_experiment_by_name("smoke")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == info["parent_run_id"]]
    n_policies = len(grid_points(config)) + 1
    expected = {"data": 1, "judge": 1, "base_model": 1, "sft": 1, "pairs": 1, "reference": 1,
                "dpo": n_policies - 1, "generate": n_policies, "evaluate": n_policies}
    counts = {}
    for run in children:
        counts[run.data.tags["stage"]] = counts.get(run.data.tags["stage"], 0) + 1
        assert run.info.status == "FINISHED", run.info.run_name
    assert counts == expected
    dpo_runs = [r for r in children if r.data.tags["stage"] == "dpo"]
    for run in dpo_runs:
        assert {"variant", "beta", "seed", "rule", "git_commit", "config_hash"} <= set(run.data.tags)
        history = client.get_metric_history(run.info.run_id, "loss")
        assert len(history) == config["dpo"]["max_steps"]  # logging_steps is 1 in the smoke config
        assert "rewards/margins" in run.data.metrics and run.data.params["loss.name"] == run.data.tags["loss"]
    sft_run = [r for r in children if r.data.tags["stage"] == "sft"][0]
    assert len(client.get_metric_history(sft_run.info.run_id, "loss")) == config["sft"]["max_steps"]
    evaluate_runs = [r for r in children if r.data.tags["stage"] == "evaluate"]
    assert all("win_rate/temp_1" in r.data.metrics and "kl_mean/temp_0" in r.data.metrics for r in evaluate_runs)
    parent_artifacts = {a.path for a in client.list_artifacts(info["parent_run_id"])}
    assert {"summary.csv", "resolved_config.yaml", "plots", "study"} <= parent_artifacts
    plots = {a.path for a in client.list_artifacts(info["parent_run_id"], "plots")}
    assert plots == {"plots/reward_vs_kl.png", "plots/win_rate_vs_beta.png", "plots/length_vs_beta.png"}
    generate_run = [r for r in children if r.data.tags["stage"] == "generate"][0]
    assert client.list_artifacts(generate_run.info.run_id, "generations")
