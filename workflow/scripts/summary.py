import json
from pathlib import Path

import mlflow
import pandas as pd
import yaml

from dpolab import jobs, tracking
from dpolab.aggregate import AggregateSettings, checkpoint_curves
from dpolab.plots import write_checkpoint_plot, write_plots
from dpolab.report import study_summary, summary_html

inputs, outputs, study = snakemake.input, snakemake.output, jobs.study_of(snakemake)
with jobs.job(snakemake, "summary", params={"evaluation": study.section("evaluation")}):
    ev = study.evaluation
    settings = AggregateSettings(ev.bootstrap_resamples, ev.confidence_level, ev.seed, ev.matched_kl_points,
                                 variants=study.grid_variants)
    skipped_sft = {"sft": False, **{point.path: point.skipped_sft for point in study.points}}
    by_seed, table, comparisons = study_summary(
        [Path(p) for p in inputs.metrics], pd.read_csv(inputs.win_rates), pd.read_parquet(inputs.outcomes),
        pd.read_parquet(inputs.judgments), pd.read_parquet(inputs.lc_draws), skipped_sft, settings)
    by_seed.to_csv(outputs.summary_by_seed, index=False)
    table.to_csv(outputs.summary, index=False)
    comparisons.to_csv(outputs.comparisons, index=False)
    Path(outputs.summary_page).write_text(summary_html(
        table, f"DPO study {study.name}: summary over seeds",
        more={"comparisons (a minus b; paired 95% CI over seeds and prompts)": comparisons, "per seed": by_seed}))
    reward_label = "gold reward (P(positive))" if not study.preferences else f"reward ({study.reward_judge} score)"
    plots = write_plots(table, pd.read_parquet(inputs.scores), dict(zip(by_seed["policy"], by_seed["variant"])),
                        Path(outputs.frontier).parent, primary_judge=study.evaluation.primary_judge,
                        score_judge=snakemake.params.score_judge, reward_label=reward_label, variants=study.grid_variants)
    if "checkpoints" in outputs.keys():
        checkpoint_files = [Path(p) for p in (*inputs.metrics, *inputs.checkpoint_metrics)]
        checkpoints_by_seed, curves = checkpoint_curves(pd.DataFrame([json.loads(p.read_text()) for p in checkpoint_files]),
                                                            {v: study.trained_steps(v) for v in study.grid_variants})
        checkpoints_by_seed.to_csv(outputs.checkpoints_by_seed, index=False)
        curves.to_csv(outputs.checkpoints, index=False)
        plots.append(write_checkpoint_plot(curves, Path(outputs.frontier).parent, reward_label=reward_label,
                                           variants=study.grid_variants))
        mlflow.log_artifact(outputs.checkpoints)
        tracking.log_checkpoint_curves(inputs.study_run, curves)
    Path(outputs.config).write_text(yaml.safe_dump(study.to_dict(), sort_keys=False))
    card = json.loads(Path(inputs.data_card).read_text())
    if "judge_accuracy" in inputs.keys():
        card["trained_judge"] = {"rule": "reward_model" if study.preferences else "judge",
                                 **json.loads(Path(inputs.judge_accuracy).read_text())}
    Path(outputs.data_card).write_text(json.dumps(card, indent=2, default=str))
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(table.to_string(index=False))
        print(comparisons.to_string(index=False))
    mlflow.log_table(table, "summary_table.json")
    for path in (outputs.summary, outputs.summary_by_seed, outputs.comparisons, outputs.summary_page):
        mlflow.log_artifact(path)
    for plot in plots:
        mlflow.log_artifact(str(plot), artifact_path="plots")
    # the study's headline results also go on the parent run, where a colleague opens the study
    tracking.log_study_results(
        inputs.study_run, table=table,
        files=[outputs.summary, outputs.summary_by_seed, outputs.comparisons, outputs.summary_page, outputs.config],
        folders={"study": [outputs.data_card, *([inputs.judge_accuracy] if "judge_accuracy" in inputs.keys() else []),
                           inputs.pair_stats, inputs.length], "plots": plots},
    )
