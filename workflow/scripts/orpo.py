from pathlib import Path

import mlflow
import pandas as pd

from dpolab import jobs, tracking
from dpolab.config import grid_point
from dpolab.train import DPOSettings, run_orpo
from dpolab.variants import train_section

config = snakemake.config
point = grid_point(config, snakemake.wildcards.variant, snakemake.wildcards.beta, snakemake.wildcards.seed)
settings, train = point.loss_params, train_section(config, point.loss_params)
with jobs.job(snakemake, "dpo", params={"dpo": train, "loss": {"name": "orpo", "beta": point.beta, **settings}}):
    mlflow.set_tags({"loss": point.loss, "starts_from": point.starts_from})
    result = run_orpo(
        Path(snakemake.input.start),
        pd.read_parquet(snakemake.input.pairs),
        DPOSettings(**train),
        beta=point.beta,
        seed=point.seed,
        out_dir=Path(snakemake.output.model).parent,
        use_cpu=config["device"] == "cpu",
        mlflow_active=True,
    )
    mlflow.log_metrics({"final_train_loss": result["train_loss"]})
    tracking.log_model_dir(Path(snakemake.output.model), config)
