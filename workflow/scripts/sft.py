from pathlib import Path

import mlflow

from dpolab import jobs, tracking
from dpolab.train import run_sft

study = jobs.study_of(snakemake)
cfg = study.sft
with jobs.job(snakemake, "sft", params={"sft": study.section("sft")}):
    out_dir = Path(snakemake.output.model).parent
    result = run_sft(
        Path(snakemake.input.base), Path(snakemake.input.texts), cfg, out_dir,
        use_cpu=study.device == "cpu", mlflow_active=True,
    )
    mlflow.log_metrics({"final_train_loss": result["train_loss"]})
    tracking.log_model_dir(out_dir / "model", snakemake.config)
