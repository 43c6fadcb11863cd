# The study's MLflow experiment and parent run; every other job opens a child run of it.
from pathlib import Path

from snakemake.logging import logger


rule mlflow_study:
    output:
        f"{STUDY}/mlflow/study_run.json",
    log:
        f"{STUDY}/logs/mlflow_study.log",
    benchmark:
        f"{STUDY}/benchmarks/mlflow_study.tsv"
    resources:
        **resources_for("mlflow_study"),
    script:
        "../scripts/mlflow_study.py"


onstart:
    # The tracking store was checked when the config was read (common.smk), dry runs included.
    from dpolab import tracking  # here, not at the top: cluster jobs parse this file without hooks

    if Path(STUDY_RUN).exists():
        # runs an earlier launch could not end (killed workflow, SIGKILL, lost node): KILLED,
        # so none stays RUNNING (the working-directory lock means none of them is live)
        closed = tracking.close_study_stale_runs(STUDY_RUN)
        if closed:
            logger.info(f"MLflow: {len(closed)} run(s) left RUNNING by an earlier launch closed as KILLED")


onsuccess:
    log_job_benchmarks("workflow finished")


onerror:
    log_job_benchmarks("workflow failed; finished jobs only")
