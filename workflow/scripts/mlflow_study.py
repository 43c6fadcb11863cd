from pathlib import Path

from dpolab import jobs, tracking

jobs.redirect_output(snakemake.log[0])
study_dir = Path(snakemake.output[0]).parents[1]
info = tracking.create_study_run(
    snakemake.config, study_dir, Path(snakemake.output[0]), benchmark=tracking.benchmark_file(snakemake.log[0])
)
print(f"MLflow experiment {info['experiment']} ({info['tracking_uri']}), parent run {info['parent_run_id']}")
