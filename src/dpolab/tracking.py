"""MLflow: one experiment per study, one parent run per study, one child run per job.

Jobs run in separate processes, so the parent run is created once by its own rule and its id
is handed to every job through a JSON file; child runs link to it with the
`mlflow.parentRunId` tag (MLflow's own nesting across processes).
"""

from __future__ import annotations

import json
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import mlflow
from mlflow.tracking import MlflowClient

from dpolab.config import ROOT, config_hash


def tracking_uri(config: dict, study_dir: Path) -> str:
    """The configured URI, or a sqlite file under the study's results folder."""
    return config["mlflow"]["tracking_uri"] or f"sqlite:///{Path(study_dir).resolve() / 'mlflow.db'}"


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


def create_study_run(config: dict, study_dir: Path, out_file: Path) -> dict:
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
    tags = {"stage": "study", "rule": "mlflow_study", "git_commit": git_commit(), "config_hash": config_hash(config)}
    run = client.create_run(experiment_id, run_name=f"study-{config['study']}", tags=tags)
    for key, value in flatten(config).items():
        client.log_param(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id, "FINISHED")
    info = {"tracking_uri": uri, "experiment_id": experiment_id, "experiment": name, "parent_run_id": run.info.run_id}
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps(info, indent=2))
    return info


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
    block ends the run FAILED (mlflow.start_run's own behaviour) and propagates."""
    info = json.loads(Path(study_run_file).read_text())
    mlflow.set_tracking_uri(info["tracking_uri"])
    os.environ["MLFLOW_TRACKING_URI"] = info["tracking_uri"]
    run_tags = {
        "mlflow.parentRunId": info["parent_run_id"],
        "stage": stage,
        "rule": rule,
        "git_commit": git_commit(),
        **({"config_hash": config_hash(config)} if config else {}),
        **{k: str(v) for k, v in (tags or {}).items()},
    }
    with mlflow.start_run(experiment_id=info["experiment_id"], run_name=name, tags=run_tags) as run:
        if params:
            mlflow.log_params(flatten(params))
        yield run


@contextmanager
def study_run(study_run_file: Path | str) -> Iterator[mlflow.ActiveRun]:
    """Reopen the parent run (to log the study's summary and plots)."""
    info = json.loads(Path(study_run_file).read_text())
    mlflow.set_tracking_uri(info["tracking_uri"])
    with mlflow.start_run(run_id=info["parent_run_id"]) as run:
        yield run
