from pathlib import Path

import mlflow
import pandas as pd

from dpolab import jobs, tracking
from dpolab.reward import train_reward_model

study = jobs.study_of(snakemake)
if not jobs.launched_elsewhere(snakemake):
    with jobs.job(
        snakemake,
        "reward_model",
        params={"reward_model": study.section("reward_model"), "training": study.section("training")},
    ) as run:
        out_dir = Path(snakemake.output.model).parent
        metrics = train_reward_model(
            Path(snakemake.input.base),
            pd.read_parquet(snakemake.input.train),
            pd.read_parquet(snakemake.input.eval),
            study.reward_model,
            out_dir,
            use_cpu=study.device == "cpu",
            mlflow_active=True,
            **jobs.training_settings(study, with_peft=False),
        )
        if run is not None:  # rank 0 of a launched job
            mlflow.log_metrics(
                {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            )
            mlflow.log_artifact(snakemake.output.accuracy)
            tracking.log_model_dir(Path(snakemake.output.model), snakemake.config)
