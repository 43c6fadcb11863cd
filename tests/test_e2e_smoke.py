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
RULES = ("mlflow_study", "data", "judge", "base_model", "sft", "pairs", "reference", "dpo", "generate", "evaluate",
         "pairwise_judge", "compare", "summary")
PLOTS = {"reward_vs_kl", "win_rate_vs_beta", "length_vs_beta", "raw_vs_lc_win_rate", "win_rate_vs_temperature", "score_vs_length"}


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


def test_summary_has_every_policy_temperature_and_judge(smoke):
    work, config = smoke
    table = pd.read_csv(work / "results" / "smoke" / "summary.csv")
    points = grid_points(config)
    temperatures, judges = config["generation"]["temperatures"], list(config["judges"])
    assert len(table) == (len(points) + 1) * len(temperatures) * len(judges)
    assert sorted(table["judge"].unique()) == sorted(judges)
    required = ["policy", "variant", "beta", "seed", "temperature", "judge", "reward_mean", "reward_ci_low", "reward_ci_high",
                "kl_mean", "win_rate", "win_rate_ci_low", "win_rate_ci_high", "lc_win_rate", "lc_win_rate_ci_low",
                "lc_win_rate_ci_high", "win_rate_vs_chosen", "length_mean", "length_ratio_vs_sft"]
    assert set(required) <= set(table.columns)
    sft = table[table["variant"] == "sft"]
    assert len(sft) == len(temperatures) * len(judges) and sft["beta"].isna().all()
    assert (sft["win_rate"] == 0.5).all() and (sft["kl_mean"] == 0).all() and (sft["length_ratio_vs_sft"] == 1).all()
    grid = table[table["variant"] != "sft"]
    assert set(zip(grid["variant"], grid["beta"])) == {(p.variant, p.beta) for p in points}
    numeric = grid[[c for c in required if c not in ("policy", "variant", "judge")]]
    assert numeric.map(lambda v: math.isfinite(v)).all().all()
    assert ((table["reward_ci_low"] <= table["reward_mean"]) & (table["reward_mean"] <= table["reward_ci_high"])).all()
    # a percentile interval need not contain the full-data fit exactly: allow optimiser noise
    assert ((grid["lc_win_rate_ci_low"] <= grid["lc_win_rate"] + 1e-6) & (grid["lc_win_rate"] <= grid["lc_win_rate_ci_high"] + 1e-6)).all()
    for column in ("win_rate", "lc_win_rate", "win_rate_vs_chosen"):
        assert table[column].between(0, 1).all(), column
    assert (table["length_mean"] > 0).all()
    # the pairwise LLM judge reports its position bias; pointwise judges have none
    llm = table[(table["judge"] == "llm") & (table["variant"] != "sft")]
    assert llm["first_slot_share"].between(0, 1).all() or llm["tie_share"].eq(1).all()
    assert table.loc[table["judge"] != "llm", "first_slot_share"].isna().all()


def test_compare_outputs(smoke):
    work, config = smoke
    study = work / "results" / "smoke" / "compare"
    judgments = pd.read_parquet(study / "judgments.parquet")
    n_prompts, n_policies = config["data"]["n_test_prompts"], len(grid_points(config)) + 1
    per_judge = judgments.groupby(["judge", "opponent"]).size().to_dict()
    n_temps = len(config["generation"]["temperatures"])
    for judge in config["judges"]:
        assert per_judge[(judge, "sft")] == (n_policies - 1) * n_temps * n_prompts
        assert per_judge[(judge, "chosen")] <= n_policies * n_temps * n_prompts
    verdicts = pd.read_parquet(study / "pairwise" / "llm.parquet")
    assert set(verdicts["verdict_in_order"]) | set(verdicts["verdict_swapped"]) <= {"first", "second", "tie"}
    analysis = json.loads((study / "length_analysis.json").read_text())
    assert set(analysis) == {"data", "policies", "score_length_spearman", "lc_length_coef"}
    assert 0 <= analysis["data"]["chosen_longer_share"] <= 1


def test_plots_and_job_records(smoke):
    work, _ = smoke
    study = work / "results" / "smoke"
    for name in PLOTS:
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
                "dpo": n_policies - 1, "generate": n_policies, "evaluate": n_policies, "pairwise_judge": 1, "compare": 1}
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
    assert all("reward_mean/temp_1" in r.data.metrics and "kl_mean/temp_0" in r.data.metrics for r in evaluate_runs)
    compare_run = [r for r in children if r.data.tags["stage"] == "compare"][0]
    assert {"win_rates.json", "win_rates.csv", "length_analysis.json"} <= {a.path for a in client.list_artifacts(compare_run.info.run_id)}
    parent_artifacts = {a.path for a in client.list_artifacts(info["parent_run_id"])}
    assert {"summary.csv", "resolved_config.yaml", "plots", "study"} <= parent_artifacts
    plots = {a.path for a in client.list_artifacts(info["parent_run_id"], "plots")}
    assert plots == {f"plots/{name}.png" for name in PLOTS}
    generate_run = [r for r in children if r.data.tags["stage"] == "generate"][0]
    assert client.list_artifacts(generate_run.info.run_id, "generations")
