from pathlib import Path

import mlflow
import yaml

from dpolab import jobs, tracking
from dpolab.report import summary_table, write_plots

jobs.redirect_output(snakemake.log[0])
table = summary_table([Path(p) for p in snakemake.input.metrics])
table.to_csv(snakemake.output.summary, index=False)
plots = write_plots(table, Path(snakemake.output.frontier).parent)
Path(snakemake.output.config).write_text(yaml.safe_dump(dict(snakemake.config), sort_keys=False))
print(table.to_string(index=False))
with tracking.study_run(snakemake.input.study_run):
    mlflow.log_artifact(snakemake.output.summary)
    mlflow.log_artifact(snakemake.output.config)
    for extra in (snakemake.input.data_card, snakemake.input.judge_accuracy, snakemake.input.pair_stats):
        mlflow.log_artifact(extra, artifact_path="study")
    for plot in plots:
        mlflow.log_artifact(str(plot), artifact_path="plots")
    mlflow.log_table(table, "summary_table.json")
