"""The summary stage's job: the study's tables (per seed, over seeds, comparisons; dpolab.report and
dpolab.aggregate), its plots (dpolab.plots), the checkpoint curves when the study has checkpoints,
the data card and the resolved config, written and logged to the job's run and the study's run.

`inputs` and `outputs` are the rule's named files (Snakemake's input and output as mappings):
inputs metrics, checkpoint_metrics, win_rates, scores, outcomes, judgments, lc_draws, length,
data_card, pair_stats, study_run[, judge_accuracy]; outputs summary, summary_by_seed, comparisons,
summary_page, frontier (its folder holds every plot), data_card, config[, checkpoints,
checkpoints_by_seed]."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import yaml

from dpolab.aggregate import AggregateSettings, checkpoint_curves
from dpolab.report import study_summary, summary_html
from dpolab.study import Study


def aggregate_settings(study: Study) -> AggregateSettings:
    ev = study.evaluation
    return AggregateSettings(
        ev.bootstrap_resamples, ev.confidence_level, ev.seed, ev.matched_kl_points, variants=study.grid_variants
    )


def reward_label(study: Study) -> str:
    return "gold reward (P(positive))" if not study.preferences else f"reward ({study.reward_judge} score)"


def data_card(study: Study, card_file: Path, judge_accuracy_file: Path | None) -> dict:
    """The data job's card, with the held-out accuracy of the judge trained in the study (if any)."""
    card = json.loads(Path(card_file).read_text())
    if judge_accuracy_file is not None:
        card["trained_judge"] = {
            "rule": "reward_model" if study.preferences else "judge",
            **json.loads(Path(judge_accuracy_file).read_text()),
        }
    return card


def write_checkpoint_curves(study: Study, metric_files: list[Path], outputs: Mapping) -> tuple[pd.DataFrame, Path]:
    """checkpoints.csv and checkpoints_by_seed.csv from every evaluated policy's metrics (final
    policies, their checkpoints, SFT), and plots/checkpoint_frontier.png."""
    from dpolab.plots import write_checkpoint_plot

    metrics = pd.DataFrame([json.loads(Path(p).read_text()) for p in metric_files])
    by_seed, curves = checkpoint_curves(metrics, {v: study.trained_steps(v) for v in study.grid_variants})
    by_seed.to_csv(outputs["checkpoints_by_seed"], index=False)
    curves.to_csv(outputs["checkpoints"], index=False)
    plot = write_checkpoint_plot(
        curves, Path(outputs["frontier"]).parent, reward_label=reward_label(study), variants=study.grid_variants
    )
    return curves, plot


def summarise(study: Study, inputs: Mapping, outputs: Mapping, *, score_judge: str, log: bool = True) -> pd.DataFrame:
    """Write every output of the summary rule; with `log`, to the active MLflow run and the study's
    run. Returns summary.csv's table."""
    import mlflow

    from dpolab import tracking
    from dpolab.plots import write_plots

    skipped_sft = {"sft": False, **{point.path: point.skipped_sft for point in study.points}}
    by_seed, table, comparisons = study_summary(
        [Path(p) for p in inputs["metrics"]],
        pd.read_csv(inputs["win_rates"]),
        pd.read_parquet(inputs["outcomes"]),
        pd.read_parquet(inputs["judgments"]),
        pd.read_parquet(inputs["lc_draws"]),
        skipped_sft,
        aggregate_settings(study),
    )
    by_seed.to_csv(outputs["summary_by_seed"], index=False)
    table.to_csv(outputs["summary"], index=False)
    comparisons.to_csv(outputs["comparisons"], index=False)
    Path(outputs["summary_page"]).write_text(
        summary_html(
            table,
            f"DPO study {study.name}: summary over seeds",
            more={"comparisons (a minus b; paired 95% CI over seeds and prompts)": comparisons, "per seed": by_seed},
        )
    )
    plots = write_plots(
        table,
        pd.read_parquet(inputs["scores"]),
        dict(zip(by_seed["policy"], by_seed["variant"])),
        Path(outputs["frontier"]).parent,
        primary_judge=study.evaluation.primary_judge,
        score_judge=score_judge,
        reward_label=reward_label(study),
        variants=study.grid_variants,
    )
    curves = None
    if "checkpoints" in outputs:
        curves, plot = write_checkpoint_curves(study, [*inputs["metrics"], *inputs["checkpoint_metrics"]], outputs)
        plots.append(plot)
    Path(outputs["config"]).write_text(yaml.safe_dump(study.to_dict(), sort_keys=False))
    accuracy = inputs.get("judge_accuracy")
    Path(outputs["data_card"]).write_text(
        json.dumps(data_card(study, inputs["data_card"], accuracy), indent=2, default=str)
    )
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(table.to_string(index=False))
        print(comparisons.to_string(index=False))
    if not log:
        return table
    tables = [outputs["summary"], outputs["summary_by_seed"], outputs["comparisons"], outputs["summary_page"]]
    mlflow.log_table(table, "summary_table.json")
    for path in tables + ([outputs["checkpoints"]] if curves is not None else []):
        mlflow.log_artifact(str(path))
    for plot in plots:
        mlflow.log_artifact(str(plot), artifact_path="plots")
    if curves is not None:
        tracking.log_checkpoint_curves(inputs["study_run"], curves)
    # the study's headline results also go on the parent run, where a colleague opens the study
    tracking.log_study_results(
        inputs["study_run"],
        table=table,
        files=[*tables, outputs["config"]],
        folders={
            "study": [outputs["data_card"], *([accuracy] if accuracy else []), inputs["pair_stats"], inputs["length"]],
            "plots": plots,
        },
    )
    return table
