from pathlib import Path

import mlflow
import pandas as pd

from dpolab import jobs
from dpolab.train import compute_reference_logps

study = jobs.study_of(snakemake)
cfg = study.dpo
with jobs.job(snakemake, "reference", params={"dpo.max_length": cfg.max_length}):
    pairs = pd.read_parquet(snakemake.input.pairs)
    reference = compute_reference_logps(
        Path(snakemake.input.sft),
        pairs,
        cfg,
        Path(snakemake.output.logps).parent,
        use_cpu=study.device == "cpu",
        **jobs.training_settings(study, with_peft=False),
    )
    mlflow.log_metrics(
        {
            "pairs": len(reference),
            "ref_chosen_logps_mean": float(reference["ref_chosen_logps"].mean()),
            "ref_rejected_logps_mean": float(reference["ref_rejected_logps"].mean()),
        }
    )
    mlflow.log_artifact(snakemake.output.meta)
