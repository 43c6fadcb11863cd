"""The smoke study run for real through every rule (TRL, vLLM, MLflow sqlite store): checks of
summary.csv, the comparison, plots and job records. The MLflow store's contents are checked
in tests/e2e/test_mlflow.py."""

import json
import math

import pandas as pd
import pytest

from dpolab.config import ROOT, read_study
from dpolab.plots import PLOTS
from dpolab.report import SUMMARY_COLUMNS
from helpers.workflow import README_RULE_VARIANT, store

RULES = (
    "mlflow_study",
    "data",
    "judge",
    "base_model",
    "sft",
    "pairs",
    "reference",
    "dpo",
    "kto_examples",
    "kto",
    "orpo",
    "preferred_ft",
    "generate",
    "evaluate",
    "pairwise_judge",
    "compare",
    "summary",
)


@pytest.fixture(scope="module")
def smoke(smoke_studies):
    """The run against the default sqlite store (see smoke_studies in tests/e2e/conftest.py)."""
    return smoke_studies.sqlite, read_study(smoke_studies.sqlite / "configs" / "smoke.yaml")


def test_summary_by_seed_has_every_policy_temperature_and_judge(smoke):
    work, spec = smoke
    config = spec.config
    table = pd.read_csv(work / "results" / "smoke" / "summary_by_seed.csv")
    points = spec.points
    temperatures, judges = config["generation"]["temperatures"], list(config["judges"])
    assert len(table) == (len(points) + 1) * len(temperatures) * len(judges)
    assert sorted(table["judge"].unique()) == sorted(judges)
    required = [
        "policy",
        "variant",
        "beta",
        "seed",
        "temperature",
        "judge",
        "reward_mean",
        "reward_ci_low",
        "reward_ci_high",
        "kl_mean",
        "win_rate",
        "win_rate_ci_low",
        "win_rate_ci_high",
        "lc_win_rate",
        "lc_win_rate_ci_low",
        "lc_win_rate_ci_high",
        "win_rate_vs_chosen",
        "length_mean",
        "length_ratio_vs_sft",
    ]
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
    assert (
        (grid["lc_win_rate_ci_low"] <= grid["lc_win_rate"] + 1e-6)
        & (grid["lc_win_rate"] <= grid["lc_win_rate_ci_high"] + 1e-6)
    ).all()
    for column in ("win_rate", "lc_win_rate", "win_rate_vs_chosen"):
        assert table[column].between(0, 1).all(), column
    assert (table["length_mean"] > 0).all()
    # the pairwise LLM judge reports its position bias; pointwise judges have none
    llm = table[(table["judge"] == "llm") & (table["variant"] != "sft")]
    assert llm["first_slot_share"].between(0, 1).all() or llm["tie_share"].eq(1).all()
    assert table.loc[table["judge"] != "llm", "first_slot_share"].isna().all()


def test_compare_outputs(smoke):
    work, spec = smoke
    config = spec.config
    study = work / "results" / "smoke" / "compare"
    judgments = pd.read_parquet(study / "judgments.parquet")
    n_prompts, n_policies = config["data"]["n_test_prompts"], len(spec.points) + 1
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
    # no pickles: not ours, and not the trainer's training_args.bin (replaced by its JSON)
    assert not [p for suffix in ("pkl", "pickle", "bin", "pt", "pth") for p in study.rglob(f"*.{suffix}")]
    assert (study / "sft" / "model" / "training_args.json").exists()
    accuracy = json.loads((study / "judge" / "accuracy.json").read_text())
    assert accuracy["gold_accuracy_full"] > 0.75  # a real classifier, not chance
    pairs = pd.read_parquet(study / "pairs" / "pairs.parquet")
    assert (pairs["chosen_score"] > pairs["rejected_score"]).all()


def test_summary_over_seeds_and_comparisons(smoke):
    """summary.csv: one row per (variant, beta, temperature, judge), here one seed each, so its
    values are the per-seed ones; comparisons.csv: every pair of variants, at the beta and at matched KL."""
    work, spec = smoke
    config, study = spec.config, work / "results" / "smoke"
    table, by_seed = pd.read_csv(study / "summary.csv"), pd.read_csv(study / "summary_by_seed.csv")
    keys = ["variant", "beta", "temperature", "judge"]
    assert not table.duplicated(keys).any() and len(table) == len(by_seed)
    grid = table[table["variant"] != "sft"]
    assert (grid["seeds"] == 1).all() and (table["prompts"] == config["data"]["n_test_prompts"]).all()
    merged = grid.merge(by_seed, on=keys, suffixes=("", "_by_seed"))
    for column in ("reward_mean", "kl_mean", "win_rate", "lc_win_rate", "length_mean"):
        assert merged[column].to_numpy() == pytest.approx(merged[f"{column}_by_seed"].to_numpy()), column
        name = {"reward_mean": "reward", "kl_mean": "kl", "length_mean": "length"}.get(column, column)
        assert ((merged[f"{name}_ci_low"] <= merged[column]) & (merged[column] <= merged[f"{name}_ci_high"])).all(), (
            column
        )
    assert grid["reward_seed_sd"].isna().all()  # one seed: no spread to report
    comparisons = pd.read_csv(study / "comparisons.csv")
    variants = sorted(set(grid["variant"]))
    pairs = {tuple(sorted(p)) for p in zip(comparisons["variant_a"], comparisons["variant_b"])}
    assert pairs == {(a, b) for i, a in enumerate(variants) for b in variants[i + 1 :]}
    at_beta = comparisons[comparisons["comparison"] == "at_beta"]
    assert set(at_beta["metric"]) >= {"win_rate", "lc_win_rate", "reward", "kl"}
    assert at_beta["difference"].to_numpy() == pytest.approx((at_beta["value_a"] - at_beta["value_b"]).to_numpy())
    assert (
        (comparisons["ci_low"] <= comparisons["difference"]) & (comparisons["difference"] <= comparisons["ci_high"])
    ).all()
    assert set(comparisons.loc[comparisons["comparison"] == "at_kl", "metric"]) == {"reward"}


def test_rule_variants_join_the_summary_plots_and_mlflow(smoke):
    """KTO and ORPO (shipped rule files) and Preferred-FT (the rule file of docs/variants.md, which only
    the test's copy of the workflow has) next to the dpo rule's variant: rows in summary.csv
    with the same columns, every plot, and their MLflow runs, with no other file changed."""
    work, spec = smoke
    config = spec.config
    study = work / "results" / "smoke"
    table = pd.read_csv(study / "summary_by_seed.csv")
    assert list(table.columns[: len(SUMMARY_COLUMNS)]) == SUMMARY_COLUMNS
    n_rows = len(config["generation"]["temperatures"]) * len(config["judges"])
    series = json.loads((study / "plots" / "series.json").read_text())
    _, info, client, runs = store(work)
    finished = {r.info.run_name: r for r in runs if r.info.status == "FINISHED"}
    for variant, rule, skipped in (
        ("dpo", "dpo", False),
        ("kto", "kto", False),
        ("orpo", "orpo", True),
        ("preferred_ft", "preferred_ft", False),
    ):
        rows = table[table["variant"] == variant]
        assert len(rows) == n_rows and (rows["loss"] == rule).all(), variant
        assert (rows["skipped_sft"] == skipped).all(), variant  # ORPO starts from the base model
        assert rows[["reward_mean", "kl_mean", "win_rate", "lc_win_rate", "length_mean"]].notna().all().all(), variant
        for plot in PLOTS:  # a legend entry, a row or a point label
            shown = series[plot]["legend"] + series[plot]["rows"] + series[plot]["labels"]
            assert any(label.startswith(variant) for label in shown), (plot, variant, shown)
        policy = rows["policy"].iloc[0]
        training = finished[f"{rule}/{policy}"]
        assert training.data.tags["loss"] == rule and training.data.tags["stage"] == "dpo"
        assert len(client.get_metric_history(training.info.run_id, "loss")) == config["dpo"]["max_steps"]
        for stage in ("generate", "evaluate"):
            assert f"{stage}/policy~{policy}" in finished, (stage, policy)
        assert (study / "dpo" / policy / "model" / "model.safetensors").exists()
    assert finished["evaluate/policy~variant~orpo/beta~0.1/seed~0"].data.tags["skipped_sft"] == "true"
    # KTO's unpaired examples: both halves of every pair
    stats = json.loads((study / "unpaired" / "variant~kto" / "stats.json").read_text())
    n_pairs = len(pd.read_parquet(study / "pairs" / "pairs.parquet"))
    assert (stats["source"], stats["desirable"], stats["undesirable"]) == ("pairs", n_pairs, n_pairs)
    assert "kto_examples/variant~kto" in finished
    # the docs' variant lives only in the copy; every other workflow file is the project's own
    assert not (ROOT / README_RULE_VARIANT).exists() and (work / README_RULE_VARIANT).exists()
    for path in (work / "workflow").rglob("*"):
        if (
            path.is_file()
            and "__pycache__" not in path.parts
            and path.relative_to(work).as_posix() != README_RULE_VARIANT
        ):
            assert path.read_bytes() == (ROOT / path.relative_to(work)).read_bytes(), path
    assert (work / "Snakefile").read_bytes() == (ROOT / "Snakefile").read_bytes()
