import json
from pathlib import Path

import mlflow
import pandas as pd

from dpolab import jobs, tracking
from dpolab.config import grid_point
from dpolab.train import DPOSettings, run_dpo

config = snakemake.config
point = grid_point(config, snakemake.wildcards.variant, snakemake.wildcards.beta, snakemake.wildcards.seed)
params = {"dpo": config["dpo"], "loss": {"name": point.loss, "beta": point.beta, **point.loss_params}}
with jobs.job(snakemake, "dpo", params=params):
    mlflow.set_tag("loss", point.loss)
    result = run_dpo(
        Path(snakemake.input.sft),
        pd.read_parquet(snakemake.input.pairs),
        pd.read_parquet(snakemake.input.reference),
        json.loads(Path(snakemake.input.reference_meta).read_text()),
        DPOSettings(**config["dpo"]),
        loss_name=point.loss,
        loss_params=point.loss_params,
        beta=point.beta,
        seed=point.seed,
        out_dir=Path(snakemake.output.model).parent,
        use_cpu=config["device"] == "cpu",
        mlflow_active=True,
    )
    mlflow.log_metrics({"final_train_loss": result["train_loss"]})
    tracking.log_model_dir(Path(snakemake.output.model), snakemake.config)
