from pathlib import Path

import mlflow
import pandas as pd
import yaml

from dpolab import jobs, tracking
from dpolab.report import summary_table, write_plots

jobs.redirect_output(snakemake.log[0])
inputs, outputs, config = snakemake.input, snakemake.output, snakemake.config
table = summary_table([Path(p) for p in inputs.metrics], pd.read_csv(inputs.win_rates))
table.to_csv(outputs.summary, index=False)
plots = write_plots(table, pd.read_parquet(inputs.scores), Path(outputs.frontier).parent,
                    primary_judge=config["evaluation"]["primary_judge"], score_judge=snakemake.params.score_judge)
Path(outputs.config).write_text(yaml.safe_dump(dict(config), sort_keys=False))
with pd.option_context("display.width", 250, "display.max_columns", 40):
    print(table.to_string(index=False))
with tracking.study_run(inputs.study_run):
    mlflow.log_artifact(outputs.summary)
    mlflow.log_artifact(outputs.config)
    for extra in (inputs.data_card, inputs.judge_accuracy, inputs.pair_stats, inputs.length):
        mlflow.log_artifact(extra, artifact_path="study")
    for plot in plots:
        mlflow.log_artifact(str(plot), artifact_path="plots")
    mlflow.log_table(table, "summary_table.json")
