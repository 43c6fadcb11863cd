from pathlib import Path

import mlflow
import pandas as pd

from dpolab import jobs
from dpolab.judges import train_gold_judge

study = jobs.study_of(snakemake)
cfg = study.judge
with jobs.job(snakemake, "judge", params={"judge": study.section("judge")}):
    reviews = pd.read_parquet(snakemake.input.reviews)
    metrics = train_gold_judge(reviews, cfg, Path(snakemake.output.judge))
    Path(snakemake.output.accuracy).write_text(Path(snakemake.output.judge, "accuracy.json").read_text())
    mlflow.log_metrics({k: v for k, v in metrics.items() if isinstance(v, float)})
    mlflow.log_artifact(snakemake.output.accuracy)
