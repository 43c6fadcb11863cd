from pathlib import Path

import mlflow

from dpolab import jobs, tracking
from dpolab.train import run_sft

study = jobs.study_of(snakemake)
cfg = study.sft
if not jobs.launched_elsewhere(snakemake):
    with jobs.job(
        snakemake,
        "sft",
        params={"sft": study.section("sft"), "training": study.section("training"), "peft": study.section("peft")},
    ) as run:
        out_dir = Path(snakemake.output.model).parent
        result = run_sft(
            Path(snakemake.input.base),
            Path(snakemake.input.texts),
            cfg,
            out_dir,
            use_cpu=study.device == "cpu",
            mlflow_active=True,
            **jobs.training_settings(study),
        )
        if run is not None:  # rank 0 of a launched job
            mlflow.log_metrics({"final_train_loss": result["train_loss"]})
            if (out_dir / "adapter").is_dir():  # peft.sft: lora: the adapter (MBs) beside the merged model
                mlflow.log_artifacts(str(out_dir / "adapter"), artifact_path="adapter")
            tracking.log_model_dir(out_dir / "model", snakemake.config)
