"""The studies the e2e tests read, each run once a session: the smoke study locally against sqlite
and on a real SLURM against a real `mlflow server` (smoke_studies). Every test under tests/e2e is
marked e2e: it runs the workflow or an inference engine for real (minutes)."""

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers.services import SLURM_ARGS, MlflowServer, SlurmCluster
from helpers.workflow import BIN, SLURM_GRID, SMOKE_COMMAND, add_readme_rule_variant, copy_workflow, edit_smoke_config


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.e2e)


@dataclass
class SmokeStudies:
    sqlite: Path  # work folder of the local run against the default sqlite store
    server_work: Path  # work folder of the SLURM run against the tracking server
    server: MlflowServer
    cluster: SlurmCluster
    local_output: str  # the local run's Snakemake output
    faulty_launch: subprocess.CompletedProcess  # the SLURM launch that lost two jobs (scancel, time limit)
    rerun: subprocess.CompletedProcess  # the SLURM launch that completed the study
    lost: dict  # {"cancelled": {run_id, slurm_job_id}, "timed_out": {run_id, slurm_job_id, time_limit}}
    wall_s: float  # both studies, SLURM faults and rerun included
    slurm_wall_s: float  # the two SLURM launches


def _lose_jobs_while_running(cluster: SlurmCluster, url: str, process: subprocess.Popen, timeout: float = 1200) -> dict:
    """Two faults in one launch, each as soon as its job is working (its MLflow run RUNNING with
    its SLURM job id): `pairs` is cancelled with scancel, and generate/sft reaches its time
    limit: `scontrol update EndTime=now` ends the job's allotted time there and then, so SLURM
    enforces the limit as for any job that outlives it (SIGTERM, state TIMEOUT, "DUE TO TIME
    LIMIT") however fast this machine runs the job. Returns what was done to which job."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    lost: dict = {}
    deadline = time.monotonic() + timeout
    while len(lost) < 2 and time.monotonic() < deadline and process.poll() is None:
        experiment = client.get_experiment_by_name("smoke")
        running = client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'") if experiment else []
        for run in running:
            job_id, name = run.data.tags.get("slurm_job_id"), run.info.run_name
            if name == "pairs" and "cancelled" not in lost:
                cluster.command("scancel", job_id, tries=10)
                lost["cancelled"] = {"run_id": run.info.run_id, "slurm_job_id": job_id}
            elif name == "generate/policy~sft" and "timed_out" not in lost:
                # Paused first: slurmctld checks time limits on its own period (tens of seconds), and on a
                # quiet machine the job could finish before it; paused, it is still there when SLURM
                # enforces the limit (its SIGTERM waits, the SIGKILL after KillWait does not).
                pid = int(run.data.tags["pid"])
                try:
                    os.kill(pid, signal.SIGSTOP)
                except ProcessLookupError:
                    continue  # already done: RUNNING in a search made before its run ended
                try:
                    limit = cluster.command("squeue", "-h", "-j", job_id, "-o", "%l", tries=10).strip()
                    # slurmctld, busy with the jobs beside it, can time out an RPC: a few tries
                    cluster.command("scontrol", "update", f"JobId={job_id}", "EndTime=now", tries=10)
                except AssertionError:
                    os.kill(pid, signal.SIGCONT)  # not left paused for the rest of the session
                    raise
                lost["timed_out"] = {"run_id": run.info.run_id, "slurm_job_id": job_id, "time_limit": limit}
        time.sleep(0.5)  # the tracking server is also serving six jobs
    assert len(lost) == 2, f"not both jobs were seen running: {lost}"
    return lost


@pytest.fixture(scope="session")
def slurm_cluster():
    # not under pytest's tmp_path: that folder is private to root and munged runs as munge
    state = Path(tempfile.mkdtemp(prefix="dpolab-slurm-"))
    cluster = SlurmCluster(state)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def smoke_studies(tmp_path_factory, slurm_cluster):
    """The smoke study twice at once: locally (3 jobs side by side, one thread each) against
    the default sqlite store, the shipped grid (dpo, kto, orpo) plus the docs' rule-file
    variant (Preferred-FT) added to that copy of the workflow; and on a real SLURM
    (`--profile profiles/slurm`) against a real `mlflow server` over HTTP, with SLURM_GRID
    (dpo, kto: every rule kind of the workflow). The first SLURM launch loses two jobs while
    they run: `pairs` to scancel, generate/sft to its time limit (_lose_jobs_while_running). A
    second launch completes the study."""
    root = tmp_path_factory.mktemp("smoke")
    server = MlflowServer(root / "server").start()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    sqlite_work, server_work = copy_workflow(root / "sqlite"), copy_workflow(root / "http")
    add_readme_rule_variant(sqlite_work)  # a variant from a rule file that only this copy has
    edit_smoke_config(server_work, lambda config: config["grid"].update(variants=SLURM_GRID))
    slurm_command = [
        str(BIN / "snakemake"),
        "--configfile",
        "configs/smoke.yaml",
        "--config",
        f"mlflow={{tracking_uri: '{server.url}'}}",
        *SLURM_ARGS,
    ]
    slurm_env = dict(slurm_cluster.env, OMP_NUM_THREADS="1")
    started = time.monotonic()
    launched: list[subprocess.Popen] = []
    try:
        with open(root / "sqlite.log", "w") as sqlite_log:
            sqlite_run = subprocess.Popen(
                SMOKE_COMMAND, cwd=sqlite_work, env=env, stdout=sqlite_log, stderr=subprocess.STDOUT
            )
            first = subprocess.Popen(
                slurm_command,
                cwd=server_work,
                env=slurm_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            launched += [sqlite_run, first]
            lost = _lose_jobs_while_running(slurm_cluster, server.url, first)
            first_output, _ = first.communicate(timeout=1500)
            (root / "slurm_faults.log").write_text(first_output)
            # Snakemake logs to stderr: one stream, as the first launch's
            rerun = subprocess.run(
                slurm_command,
                cwd=server_work,
                env=slurm_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=1800,
            )
            (root / "slurm_rerun.log").write_text(rerun.stdout)
            slurm_wall_s = time.monotonic() - started
            assert rerun.returncode == 0, rerun.stdout[-8000:]
            assert sqlite_run.wait(timeout=1500) == 0, (root / "sqlite.log").read_text()[-6000:]
        yield SmokeStudies(
            sqlite_work,
            server_work,
            server,
            slurm_cluster,
            (root / "sqlite.log").read_text(),
            subprocess.CompletedProcess(slurm_command, first.returncode, first_output, ""),
            rerun,
            lost,
            time.monotonic() - started,
            slurm_wall_s,
        )
    finally:
        stop_left_running(launched)
        server.stop()


def stop_left_running(processes: list[subprocess.Popen]) -> None:
    """After a failure: Snakemake runs still going are stopped (SIGTERM, which Snakemake passes to its
    jobs), so they do not slow every later test of the session."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
