from pathlib import Path

import mlflow

from dpolab import jobs, tracking
from dpolab.train import SFTSettings, run_sft

cfg = SFTSettings(**snakemake.config["sft"])
with jobs.job(snakemake, "sft", params={"sft": snakemake.config["sft"]}):
    out_dir = Path(snakemake.output.model).parent
    result = run_sft(
        Path(snakemake.input.base), Path(snakemake.input.texts), cfg, out_dir,
        use_cpu=snakemake.config["device"] == "cpu", mlflow_active=True,
    )
    mlflow.log_metrics({"final_train_loss": result["train_loss"]})
    tracking.log_model_dir(out_dir / "model", snakemake.config)
