"""The MLflow layer on a real sqlite store: stop signals end a job's run KILLED, a rerun closes
runs an earlier attempt could not end, benchmarks join the jobs' runs once, and an
unreachable tracking URI is refused with its address named."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from mlflow.tracking import MlflowClient

from dpolab import tracking
from dpolab.config import ROOT, read_study
from dpolab.errors import ConfigError


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("store")  # one sqlite store: creating its schema takes seconds


@pytest.fixture()
def study(store_dir, tmp_path):
    """A new parent run (a study launch) in the shared store; its ids in tmp_path/study_run.json."""
    config = read_study(ROOT / "configs" / "smoke.yaml").to_dict()
    info = tracking.create_study_run(config, store_dir, tmp_path / "study_run.json")
    return tmp_path, info, MlflowClient(info["tracking_uri"])


JOB = textwrap.dedent("""
    import sys, time
    from dpolab import tracking
    with tracking.job_run(sys.argv[1], rule="dpo", stage="dpo", name=sys.argv[4], tags={"benchmark_file": sys.argv[2]}):
        print("started", flush=True)
        if sys.argv[3] == "wait":
            time.sleep(120)
""")


def start_job(study_dir, mode, benchmark="unused.tsv", name="dpo/variant~dpo"):
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    process = subprocess.Popen(
        [sys.executable, "-c", JOB, str(study_dir / "study_run.json"), benchmark, mode, name],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout.readline().strip() == "started"
    return process


def job_runs(client, info):
    runs = client.search_runs(
        [info["experiment_id"]], filter_string=f"tags.mlflow.parentRunId = '{info['parent_run_id']}'"
    )
    return sorted(runs, key=lambda r: r.info.start_time)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_ends_the_run_killed(study, signum):
    study_dir, info, client = study
    process = start_job(study_dir, "wait")
    process.send_signal(signum)
    assert process.wait(timeout=60) == 128 + signum
    (run,) = job_runs(client, info)
    assert run.info.status == "KILLED"
    assert run.data.tags["ended_by"] == signal.Signals(signum).name
    assert run.data.tags["pid"] == str(process.pid)


def test_rerun_closes_a_run_left_running_by_sigkill(study):
    study_dir, info, client = study
    process = start_job(study_dir, "wait")
    process.kill()  # SIGKILL: no handler runs, the run stays RUNNING
    process.wait(timeout=60)
    assert [r.info.status for r in job_runs(client, info)] == ["RUNNING"]
    rerun = start_job(study_dir, "finish")
    assert rerun.wait(timeout=60) == 0
    killed, finished = job_runs(client, info)
    assert (killed.info.status, finished.info.status) == ("KILLED", "FINISHED")
    assert killed.data.tags["ended_by"] == "closed by a later launch of its job"


def test_workflow_start_closes_every_run_left_running(study):
    study_dir, info, client = study
    for variant in ("dpo", "ipo"):
        process = start_job(study_dir, "wait", name=f"dpo/variant~{variant}")
        process.kill()
        process.wait(timeout=60)
    assert [r.info.status for r in job_runs(client, info)] == ["RUNNING", "RUNNING"]
    assert len(tracking.close_study_stale_runs(study_dir / "study_run.json")) == 2
    assert {r.data.tags["ended_by"] for r in job_runs(client, info)} == {"closed when the workflow restarted"}
    assert [r.info.status for r in job_runs(client, info)] == ["KILLED", "KILLED"]


def test_benchmarks_join_the_latest_finished_run_once(study):
    study_dir, info, client = study
    bench = study_dir / "benchmarks" / "dpo.tsv"
    bench.parent.mkdir()
    bench.write_text(
        "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
        "12.5\t0:00:12\t812.25\t2000.5\t700.1\t710.2\t1.5\t20.0\t90.0\t11.0\n"
    )
    first = start_job(study_dir, "finish", str(bench))
    assert first.wait(timeout=60) == 0
    second = start_job(study_dir, "finish", str(bench))
    assert second.wait(timeout=60) == 0
    assert tracking.log_benchmarks(study_dir / "study_run.json") == {"logged": 1, "already": 0, "missing_file": 0}
    older, newer = job_runs(client, info)
    assert "benchmark/wall_s" not in older.data.metrics
    assert newer.data.metrics["benchmark/wall_s"] == 12.5 and newer.data.metrics["benchmark/max_rss_mb"] == 812.25
    assert newer.data.metrics["benchmark/cpu_time_s"] == 11.0
    assert tracking.log_benchmarks(study_dir / "study_run.json")["logged"] == 0  # nothing twice
    assert len(client.get_metric_history(newer.info.run_id, "benchmark/wall_s")) == 1


def test_benchmark_file_follows_the_log_file():
    assert (
        tracking.benchmark_file("results/s/logs/dpo/variant~dpo/beta~0.1/seed~0.log")
        == "results/s/benchmarks/dpo/variant~dpo/beta~0.1/seed~0.tsv"
    )
    with pytest.raises(ValueError, match="under <study>/logs/"):
        tracking.benchmark_file("results/s/dpo.txt")


def test_unreachable_tracking_uri_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"http://127\.0\.0\.1:9 .*refused"):
        tracking.check_tracking_uri("http://127.0.0.1:9", timeout=2)
    (tmp_path / "file").write_text("")
    with pytest.raises(
        ConfigError, match=r"cannot create the sqlite store .*file/sub/mlflow\.db: .*file is not a writable folder"
    ):
        tracking.check_tracking_uri(f"sqlite:///{tmp_path / 'file' / 'sub' / 'mlflow.db'}")
    tracking.check_tracking_uri(f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}")  # creatable: fine


def test_workflow_stops_before_any_job_when_the_server_is_unreachable(tmp_path):
    snakemake = os.path.join(os.path.dirname(sys.executable), "snakemake")
    started = time.monotonic()
    result = subprocess.run(
        [
            snakemake,
            "--cores",
            "1",
            "--directory",
            str(tmp_path),
            "--snakefile",
            str(ROOT / "Snakefile"),
            "--configfile",
            str(ROOT / "configs" / "smoke.yaml"),
            "--config",
            "mlflow={tracking_uri: 'http://127.0.0.1:9'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "cannot reach the MLflow tracking server at http://127.0.0.1:9" in output
    assert not (tmp_path / "results").exists()  # no job ran, not even the parent run's
    assert time.monotonic() - started < 120


def test_model_folder_and_study_results_are_logged(study):
    import pandas as pd

    study_dir, info, client = study
    model = study_dir / "model"
    model.mkdir()
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        (model / name).write_text(name)
    config = read_study(ROOT / "configs" / "smoke.yaml").to_dict()
    with tracking.job_run(study_dir / "study_run.json", rule="sft", stage="sft", name="sft") as run:
        assert tracking.log_model_dir(model, config)
        off = dict(config, mlflow=dict(config["mlflow"], log_models=False))
        assert not tracking.log_model_dir(model, off)
    found = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert found == {"model/model.safetensors", "model/config.json", "model/tokenizer.json"}
    (study_dir / "summary.csv").write_text("a\n1\n")
    tracking.log_study_results(
        study_dir / "study_run.json",
        table=pd.DataFrame({"a": [1]}),
        files=[study_dir / "summary.csv"],
        folders={"study": [model / "config.json"]},
    )
    parent = {a.path for a in client.list_artifacts(info["parent_run_id"])}
    assert {"summary.csv", "summary_table.json", "study"} <= parent
    assert client.get_run(info["parent_run_id"]).info.status == "FINISHED"  # not reopened


def test_a_training_jobs_result_logs_its_numbers_files_and_folders(study):
    study_dir, info, client = study
    model, adapter, missing = study_dir / "model", study_dir / "adapter", study_dir / "no_such_folder"
    for folder in (model, adapter):
        folder.mkdir()
        (folder / "config.json").write_text("{}")
    accuracy = study_dir / "accuracy.json"
    accuracy.write_text('{"accuracy": 0.9}')
    config = read_study(ROOT / "configs" / "smoke.yaml").to_dict()
    metrics = {"accuracy": 0.9, "pairs": 12, "converged": True, "note": "text"}
    with tracking.job_run(study_dir / "study_run.json", rule="reward_model", stage="reward_model", name="rm") as run:
        tracking.log_training_result(
            metrics, model, config, files=[accuracy], folders={"adapter": adapter, "gone": missing}
        )
    logged = client.get_run(run.info.run_id).data.metrics
    assert logged == {"accuracy": 0.9, "pairs": 12.0}  # booleans and text left out
    found = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert found == {"accuracy.json", "adapter", "model"}  # a folder that does not exist is skipped
