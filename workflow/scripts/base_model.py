from pathlib import Path

import mlflow

from dpolab import jobs
from dpolab.models import prepare_base_model

model = jobs.study_of(snakemake).section("model")
with jobs.job(snakemake, "base_model", params={"model": model}):
    card = prepare_base_model(model, Path(snakemake.output.model))
    mlflow.log_metric("parameters", card["parameters"])
    mlflow.log_dict(card, "model_card.json")
