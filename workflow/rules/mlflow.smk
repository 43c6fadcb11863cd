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


def _log_benchmarks(outcome):
    # Snakemake writes a job's benchmark file after the job ends, so runtimes and peak
    # memory join the jobs' runs here, once the jobs are done (a repeat logs nothing twice)
    from dpolab import tracking

    if Path(STUDY_RUN).exists():
        try:
            counts = tracking.log_benchmarks(STUDY_RUN)
            logger.info(f"MLflow: benchmarks logged for {counts['logged']} job runs ({outcome})")
        except Exception as error:  # the study's results stand even if the store went away
            logger.warning(f"MLflow: could not log the job benchmarks: {error}")


onsuccess:
    _log_benchmarks("workflow finished")


onerror:
    _log_benchmarks("workflow failed; finished jobs only")
