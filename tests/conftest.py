import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny Llama made from scratch with the package model's tokenizer (as configs/smoke.yaml)."""
    from dpolab.config import load_config, ROOT
    from dpolab.models import prepare_base_model

    config = load_config(ROOT / "configs" / "smoke.yaml")
    model_cfg = dict(config["model"], scratch=dict(config["model"]["scratch"], hidden_size=32, intermediate_size=64))
    out = tmp_path_factory.mktemp("tiny") / "model"
    prepare_base_model(model_cfg, out)
    return out


@pytest.fixture(scope="session")
def vllm_model_dir(tmp_path_factory):
    """The smoke config's tiny Llama (head_dim 64): vLLM's CPU attention does not take the
    head_dim 16 of tiny_model_dir."""
    from dpolab.config import load_config, ROOT
    from dpolab.models import prepare_base_model

    config = load_config(ROOT / "configs" / "smoke.yaml")
    out = tmp_path_factory.mktemp("tiny-vllm") / "model"
    prepare_base_model(config["model"], out)
    return out


# ---- the smoke study, run for real (e2e tests) ----------------------------------------------
import json  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

BIN = Path(sys.executable).parent
# several jobs side by side, one thread each: the concurrency the stores must survive
SMOKE_COMMAND = [str(BIN / "snakemake"), "--cores", "3", "--max-threads", "1", "--configfile", "configs/smoke.yaml"]


def copy_workflow(work: Path) -> Path:
    """A copy of the workflow, so a test never touches the project's results/."""
    from dpolab.config import ROOT

    work.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "workflow", "configs", "profiles"):
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, work / name)
    return work


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 with its own sqlite backend and artifact root."""

    root: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> "MlflowServer":
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "server.log", "w")
        self.process = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{self.root / 'server.db'}",
             "--artifacts-destination", str(self.root / "artifacts")],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env=dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true"),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.root / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(1)
        raise TimeoutError(f"mlflow server on {self.url} did not answer in {timeout} s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


@dataclass
class SmokeStudies:
    sqlite: Path  # work folder of the run against the default sqlite store
    server_work: Path  # work folder of the run against the tracking server
    server: MlflowServer
    killed_run_id: str  # the server run's DPO job killed while it ran
    first_attempt: subprocess.CompletedProcess  # the server run that lost that job
    wall_s: float


def _kill_first_running_dpo(url: str, process: subprocess.Popen, timeout: float = 1200) -> str:
    """Wait until a DPO job is training (its run RUNNING and holding the trainer's arguments,
    which TRL's MLflow callback logs when training begins), then SIGTERM that job's process
    (the signal SLURM and Snakemake send) and return the run's id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        experiment = client.get_experiment_by_name("smoke")
        runs = client.search_runs([experiment.experiment_id], "tags.stage = 'dpo' and attributes.status = 'RUNNING'") if experiment else []
        for run in runs:
            if "per_device_train_batch_size" not in run.data.params:
                continue  # still loading
            try:
                os.kill(int(run.data.tags["pid"]), signal.SIGTERM)
                return run.info.run_id
            except ProcessLookupError:
                continue  # it finished between the search and the kill
        time.sleep(0.25)
    raise AssertionError("no DPO job was seen training")


@pytest.fixture(scope="session")
def smoke_studies(tmp_path_factory):
    """The smoke study twice at once (3 jobs side by side in each, one thread per job):
    against the default sqlite store, and against a real `mlflow server` over HTTP. In the
    server run one DPO job is killed while it runs; the study is then rerun to completion."""
    root = tmp_path_factory.mktemp("smoke")
    server = MlflowServer(root / "server").start()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    sqlite_work, server_work = copy_workflow(root / "sqlite"), copy_workflow(root / "http")
    server_command = [*SMOKE_COMMAND, "--config", f"mlflow={{tracking_uri: '{server.url}'}}"]
    started = time.monotonic()
    try:
        with open(root / "sqlite.log", "w") as sqlite_log:
            sqlite_run = subprocess.Popen(SMOKE_COMMAND, cwd=sqlite_work, env=env, stdout=sqlite_log, stderr=subprocess.STDOUT)
            first = subprocess.Popen(server_command, cwd=server_work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            killed = _kill_first_running_dpo(server.url, first)
            first_output, _ = first.communicate(timeout=1500)
            rerun = subprocess.run(server_command, cwd=server_work, env=env, capture_output=True, text=True, timeout=1500)
            assert rerun.returncode == 0, rerun.stdout[-4000:] + rerun.stderr[-4000:]
            assert sqlite_run.wait(timeout=1500) == 0, (root / "sqlite.log").read_text()[-6000:]
        yield SmokeStudies(sqlite_work, server_work, server, killed,
                           subprocess.CompletedProcess(server_command, first.returncode, first_output, ""),
                           time.monotonic() - started)
    finally:
        server.stop()
