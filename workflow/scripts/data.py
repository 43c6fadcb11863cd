from pathlib import Path

import mlflow

from dpolab import jobs
from dpolab.data import build

study = jobs.study_of(snakemake)
cfg = study.data
with jobs.job(snakemake, "data", params={"data": study.section("data")}):
    card = build(cfg, Path(snakemake.output.card).parent)
    mlflow.log_metrics({f"reviews_{k}": v for k, v in card["reviews"].items()})
    mlflow.log_artifact(snakemake.output.card)
