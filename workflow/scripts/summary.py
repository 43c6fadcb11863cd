import json
from pathlib import Path

import mlflow
import pandas as pd
import yaml

from dpolab import jobs, tracking
from dpolab.report import summary_html, summary_table, write_plots

inputs, outputs, study = snakemake.input, snakemake.output, jobs.study_of(snakemake)
with jobs.job(snakemake, "summary", params={"evaluation": study.section("evaluation")}):
    skipped_sft = {"sft": False, **{point.path: point.skipped_sft for point in study.points}}
    table = summary_table([Path(p) for p in inputs.metrics], pd.read_csv(inputs.win_rates), skipped_sft)
    table.to_csv(outputs.summary, index=False)
    Path(outputs.summary_page).write_text(summary_html(table, f"DPO study {study.name}: summary"))
    reward_label = "gold reward (P(positive))" if not study.preferences else f"reward ({study.reward_judge} score)"
    plots = write_plots(table, pd.read_parquet(inputs.scores), Path(outputs.frontier).parent,
                        primary_judge=study.evaluation.primary_judge, score_judge=snakemake.params.score_judge,
                        reward_label=reward_label)
    Path(outputs.config).write_text(yaml.safe_dump(study.to_dict(), sort_keys=False))
    card = json.loads(Path(inputs.data_card).read_text())
    if "judge_accuracy" in inputs.keys():
        card["trained_judge"] = {"rule": "reward_model" if study.preferences else "judge",
                                 **json.loads(Path(inputs.judge_accuracy).read_text())}
    Path(outputs.data_card).write_text(json.dumps(card, indent=2, default=str))
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(table.to_string(index=False))
    mlflow.log_table(table, "summary_table.json")
    mlflow.log_artifact(outputs.summary)
    mlflow.log_artifact(outputs.summary_page)
    for plot in plots:
        mlflow.log_artifact(str(plot), artifact_path="plots")
    # the study's headline results also go on the parent run, where a colleague opens the study
    tracking.log_study_results(
        inputs.study_run, table=table, files=[outputs.summary, outputs.summary_page, outputs.config],
        folders={"study": [outputs.data_card, *([inputs.judge_accuracy] if "judge_accuracy" in inputs.keys() else []),
                           inputs.pair_stats, inputs.length], "plots": plots},
    )
