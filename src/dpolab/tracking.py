"""MLflow: one experiment per study, one parent run per study, one child run per job.

Jobs run in separate processes, so the parent run is created once by its own rule and its id
is handed to every job through a JSON file; child runs link to it with the
`mlflow.parentRunId` tag (MLflow's own nesting across processes).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from dpolab.checks import check_tracking_uri, tracking_uri  # noqa: F401 (the store's URI and its check live with the config checks)
from dpolab.config import ROOT
from dpolab.study import config_hash

# Snakemake benchmark columns logged as per-job metrics (s: wall seconds; max_rss: peak
# resident memory in MB; cpu_time: user+system seconds).
BENCHMARK_METRICS = {
    "s": "benchmark/wall_s",
    "max_rss": "benchmark/max_rss_mb",
    "max_vms": "benchmark/max_vms_mb",
    "io_in": "benchmark/io_in_mb",
    "io_out": "benchmark/io_out_mb",
    "cpu_time": "benchmark/cpu_time_s",
}
# signals that end a job early (Ctrl-C, scancel / SLURM time limit, a closed terminal)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def artifact_location(config: dict, study_dir: Path) -> str | None:
    """Where a new experiment keeps artifacts; for local stores a folder under results/
    (MLflow's own default is ./mlruns in the working directory)."""
    if config["mlflow"]["artifact_location"]:
        return config["mlflow"]["artifact_location"]
    uri = tracking_uri(config, study_dir)
    if uri.startswith(("http://", "https://", "databricks")):
        return None  # the server decides (its --artifacts-destination)
    return (Path(study_dir).resolve() / "mlartifacts").as_uri()


def experiment_name(config: dict) -> str:
    return config["mlflow"]["experiment"] or config["study"]


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def create_study_run(config: dict, study_dir: Path, out_file: Path, benchmark: str | None = None) -> dict:
    """Create (or reuse) the study's experiment and a new parent run; write its ids."""
    uri = tracking_uri(config, study_dir)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    name = experiment_name(config)
    experiment = client.get_experiment_by_name(name)
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(name, artifact_location=artifact_location(config, study_dir))
    )
    if experiment is None or "mlflow.experimentKind" not in experiment.tags:
        # the MLflow UI then opens the experiment as model training (runs, metrics, artifacts)
        # rather than as a GenAI experiment (traces)
        client.set_experiment_tag(experiment_id, "mlflow.experimentKind", "custom_model_development")
    tags = {
        "stage": "study",
        "rule": "mlflow_study",
        "git_commit": git_commit(),
        "config_hash": config_hash(config),
        "host": socket.gethostname(),
        **scheduler_tags(),
        **({"benchmark_file": benchmark} if benchmark else {}),
    }
    run = client.create_run(experiment_id, run_name=f"study-{config['study']}", tags=tags)
    for key, value in flatten(config).items():
        client.log_param(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id, "FINISHED")
    info = {"tracking_uri": uri, "experiment_id": experiment_id, "experiment": name, "parent_run_id": run.info.run_id}
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps(info, indent=2))
    return info


def scheduler_tags() -> dict[str, str]:
    """Where a cluster job ran: SLURM's job id, node list and partition (none outside SLURM)."""
    names = {
        "SLURM_JOB_ID": "slurm_job_id",
        "SLURM_JOB_NODELIST": "slurm_nodelist",
        "SLURM_JOB_PARTITION": "slurm_partition",
    }
    return {tag: os.environ[var] for var, tag in names.items() if os.environ.get(var)}


def flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    """Nested config -> {"dpo.max_steps": "40", ...}; values as MLflow stores them (<= 6000 chars)."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = json.dumps(value)[:6000] if not isinstance(value, str) else value[:6000]
    return flat


@contextmanager
def job_run(
    study_run_file: Path | str,
    *,
    rule: str,
    stage: str,
    name: str,
    tags: dict | None = None,
    params: dict | None = None,
    config: dict | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """A child run of the study's parent run for one workflow job. An exception inside the
    block ends the run FAILED (mlflow.start_run's own behaviour) and propagates; a stop signal
    ends it KILLED. Python lets only the main thread handle signals, and Snakemake runs a
    rule's `run:` block in a worker thread: such a run, if its job is killed, is closed KILLED
    when the job or the workflow is launched again (close_stale_runs), as after a SIGKILL."""
    info = json.loads(Path(study_run_file).read_text())
    mlflow.set_tracking_uri(info["tracking_uri"])
    os.environ["MLFLOW_TRACKING_URI"] = info["tracking_uri"]
    run_tags = {
        "mlflow.parentRunId": info["parent_run_id"],
        "stage": stage,
        "rule": rule,
        "git_commit": git_commit(),
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
        **scheduler_tags(),
        **({"config_hash": config_hash(config)} if config else {}),
        **{k: str(v) for k, v in (tags or {}).items()},
    }
    close_stale_runs(MlflowClient(info["tracking_uri"]), info, name)
    with mlflow.start_run(experiment_id=info["experiment_id"], run_name=name, tags=run_tags) as run:
        in_main_thread = threading.current_thread() is threading.main_thread()
        previous = {sig: signal.signal(sig, _end_run_killed) for sig in STOP_SIGNALS} if in_main_thread else {}
        try:
            if params:
                mlflow.log_params(flatten(params))
            yield run
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _end_run_killed(signum, frame) -> None:
    """A stop signal ends the active run KILLED, then the process exits at once with the
    shell's code for that signal (Snakemake and SLURM then see a failed job)."""
    signal.signal(signum, signal.SIG_DFL)
    signal.alarm(20)  # if the store hangs, SIGALRM's default action still ends the process
    try:
        mlflow.set_tag("ended_by", signal.Signals(signum).name)
        mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
    finally:
        os._exit(128 + signum)


def close_stale_runs(client: MlflowClient, info: dict, name: str | None = None) -> list[str]:
    """Runs of this study (of the job `name`, or of any job) still RUNNING belong to an earlier
    attempt that could not end them (SIGKILL, out of memory, a lost node): end them KILLED.
    Called when a job starts (for its own name) and when the workflow starts (for all):
    Snakemake never runs two jobs for the same outputs at once and locks the working
    directory, so no live run is closed."""
    query = f"tags.mlflow.parentRunId = '{info['parent_run_id']}' and attributes.status = 'RUNNING'"
    if name is not None:
        query += f" and attributes.run_name = '{name}'"
    stale = client.search_runs([info["experiment_id"]], filter_string=query, max_results=5000)
    for run in stale:
        client.set_tag(
            run.info.run_id,
            "ended_by",
            "closed by a later launch of its job" if name else "closed when the workflow restarted",
        )
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
    return [run.info.run_id for run in stale]


def close_study_stale_runs(study_run_file: Path | str) -> list[str]:
    info = json.loads(Path(study_run_file).read_text())
    return close_stale_runs(MlflowClient(info["tracking_uri"]), info)


def log_model_dir(model_dir: Path | str, config: dict) -> bool:
    """Log a saved model folder (safetensors, config, tokenizer) as the run's `model/`
    artifacts when `mlflow.log_models` is on; load it back with
    `from_pretrained(mlflow.artifacts.download_artifacts(run_id=..., artifact_path="model"))`."""
    if not config["mlflow"]["log_models"]:
        return False
    mlflow.log_artifacts(str(model_dir), artifact_path="model")
    return True


def log_training_result(
    metrics: dict, model_dir: Path | str, config: dict, *, files=(), folders: dict | None = None
) -> None:
    """What a training job logs to its run when it ends: its numeric metrics (booleans and text
    left out), `files` (e.g. the reward model's accuracy.json), each folder of `folders` that
    exists under its name (e.g. peft.sft: lora's adapter beside the merged model), and the model
    folder (log_model_dir)."""
    numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    mlflow.log_metrics(numbers)
    for path in files:
        mlflow.log_artifact(str(path))
    for name, folder in (folders or {}).items():
        if Path(folder).is_dir():
            mlflow.log_artifacts(str(folder), artifact_path=name)
    log_model_dir(model_dir, config)


def log_study_results(study_run_file: Path | str, *, table, files: list, folders: dict[str, list]) -> None:
    """Log the study's summary table and files to the parent run (from inside a job's own run,
    so through the client: the parent is not reopened and its status stays as it is)."""
    info = json.loads(Path(study_run_file).read_text())
    client = MlflowClient(info["tracking_uri"])
    parent = info["parent_run_id"]
    client.log_table(parent, table, "summary_table.json")
    for path in files:
        client.log_artifact(parent, str(path))
    for folder, paths in folders.items():
        for path in paths:
            client.log_artifact(parent, str(path), artifact_path=folder)


def curve_metrics(curves) -> list:
    """checkpoints.csv's rows over seeds as MLflow metrics at their training steps, one series per
    (variant, beta, temperature) and figure: `checkpoints/<variant>/beta_<b>/temp_<t>/reward_mean`, so
    the MLflow UI charts each curve against the step (SFT is step 0 of every series)."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    sft = curves[curves["variant"] == "sft"]
    metrics = []
    for (variant, beta, temperature), rows in curves[curves["variant"] != "sft"].groupby(
        ["variant", "beta", "temperature"]
    ):
        start = sft[sft["temperature"] == temperature]
        for _, row in pd.concat([start, rows]).iterrows():
            for figure in ("reward_mean", "kl_mean"):
                key = f"checkpoints/{variant}/beta_{beta:g}/temp_{temperature:g}/{figure}"
                metrics.append(Metric(key, float(row[figure]), now, int(row["step"])))
    return metrics


def log_checkpoint_curves(study_run_file: Path | str, curves) -> int:
    """The checkpoint curves (curve_metrics) on the study's parent run; returns how many points."""
    info = json.loads(Path(study_run_file).read_text())
    client = MlflowClient(info["tracking_uri"])
    metrics = curve_metrics(curves)
    for start in range(0, len(metrics), 1000):  # MLflow's log_batch takes at most 1000 metrics a call
        client.log_batch(info["parent_run_id"], metrics=metrics[start : start + 1000])
    return len(metrics)


def read_benchmark(path: Path) -> dict[str, float]:
    """The last row of a Snakemake benchmark file (a job repeated with `repeat()` keeps the
    last), as {column: value} for its numeric columns ("h:m:s" and "NA" entries drop out)."""
    last = pd.read_csv(path, sep="\t").tail(1)
    return {k: float(v) for k, v in last.select_dtypes("number").iloc[0].items() if pd.notna(v)} if len(last) else {}


def log_benchmarks(study_run_file: Path | str) -> dict[str, int]:
    """Log each job's runtime and peak memory from its Snakemake benchmark file into the job's
    run. Benchmark files are written by Snakemake after a job ends, so this runs once the
    workflow has finished (the Snakefile's onsuccess hook). A job whose latest FINISHED run
    already has them is skipped, so calling it again logs nothing twice."""
    info = json.loads(Path(study_run_file).read_text())
    client = MlflowClient(info["tracking_uri"])
    runs = client.search_runs(
        [info["experiment_id"]],
        filter_string="attributes.status = 'FINISHED'",
        max_results=50_000,
        order_by=["attributes.start_time DESC"],
    )
    latest: dict[str, object] = {}
    for run in runs:  # newest first: the first run seen per benchmark file is the job's latest
        key = run.data.tags.get("benchmark_file")
        if (
            key
            and key not in latest
            and (
                run.data.tags.get("mlflow.parentRunId") == info["parent_run_id"]
                or run.info.run_id == info["parent_run_id"]
            )
        ):
            latest[key] = run
    counts = {"logged": 0, "already": 0, "missing_file": 0}
    for key, run in latest.items():
        path = Path(key)
        if not path.exists():
            counts["missing_file"] += 1
            continue
        if BENCHMARK_METRICS["s"] in run.data.metrics:
            counts["already"] += 1
            continue
        values = read_benchmark(path)
        metrics = {name: values[column] for column, name in BENCHMARK_METRICS.items() if column in values}
        for name, value in metrics.items():
            client.log_metric(run.info.run_id, name, value)
        counts["logged"] += 1
    return counts


def benchmark_file(log_file: str) -> str:
    """A job's benchmark file from its log file: every rule keeps logs/X.log beside
    benchmarks/<rule>.tsv (tests check that each job's run gets its benchmark)."""
    head, sep, tail = str(log_file).rpartition("/logs/")
    if not sep or not tail.endswith(".log"):
        raise ValueError(f"{log_file}: a job log must live under <study>/logs/ and end in .log")
    return f"{head}/benchmarks/{tail[:-4]}.tsv"
