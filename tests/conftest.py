import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny Llama made from scratch with the package model's tokenizer (as configs/smoke.yaml)."""
    from dpolab.config import read_study, ROOT
    from dpolab.models import prepare_base_model

    model = read_study(ROOT / "configs" / "smoke.yaml").section("model")
    model_cfg = dict(model, scratch=dict(model["scratch"], hidden_size=32, intermediate_size=64))
    out = tmp_path_factory.mktemp("tiny") / "model"
    prepare_base_model(model_cfg, out)
    return out


@pytest.fixture(scope="session")
def vllm_model_dir(tmp_path_factory):
    """The smoke config's tiny Llama (head_dim 64): vLLM's CPU attention does not take the
    head_dim 16 of tiny_model_dir."""
    from dpolab.config import read_study, ROOT
    from dpolab.models import prepare_base_model

    out = tmp_path_factory.mktemp("tiny-vllm") / "model"
    prepare_base_model(read_study(ROOT / "configs" / "smoke.yaml").section("model"), out)
    return out


# ---- the smoke study, run for real (e2e tests) ----------------------------------------------
import json  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
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


def readme_blocks(first_line: str, page: str = "docs/variants.md") -> list[str]:
    """A docs page's fenced code blocks whose first line is `first_line` (e.g. a file's path as
    a comment): the worked examples, so tests run exactly what a user copies."""
    import re

    from dpolab.config import ROOT

    blocks = re.findall(r"^```\w*\n(.*?)^```", (ROOT / page).read_text(), flags=re.S | re.M)
    return [block for block in blocks if block.splitlines()[0].strip() == first_line]


README_RULE_VARIANT = "workflow/rules/variants/preferred_ft.smk"
README_VARIANT = "preferred_ft"
# The SLURM smoke run trains the registry loss and one rule variant: every rule kind of the
# workflow (the dpo rule, a variant's own example-making and `script:` training rules) runs as a
# SLURM job. ORPO (a `script:` rule variant like KTO) and the docs' `run:` variant (docs/variants.md) are trained
# by the local run only: on a 2-core machine each policy in both runs cost over a minute of the
# suite (each run is CPU-bound beside the other).
SLURM_GRID = ["dpo", "kto"]
LOCAL_ONLY_VARIANTS = ("orpo", README_VARIANT)


def local_only(name: str) -> bool:
    """Whether a run name, path or policy belongs to a variant that only the local smoke run
    trains (smoke_studies): the SLURM run is compared with the local one on the rest."""
    return any(f"variant~{v}" in name or name.startswith(f"{v}/") for v in LOCAL_ONLY_VARIANTS)


def edit_smoke_config(work: Path, edit) -> None:
    """Apply `edit` (a function changing the config in place) to a copy's configs/smoke.yaml."""
    import yaml

    config_file = work / "configs" / "smoke.yaml"
    config = yaml.safe_load(config_file.read_text())
    edit(config)
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))


def add_readme_rule_variant(work: Path) -> str:
    """Add the docs' rule-file variant (Preferred-FT, docs/variants.md) to a copy of the workflow: its rule
    file and its config entry, nothing else. Returns the variant's name."""
    import yaml

    (rule_file,) = readme_blocks(f"# {README_RULE_VARIANT}")
    (work / README_RULE_VARIANT).write_text(rule_file)
    (entry,) = [yaml.safe_load(b) for b in readme_blocks("# configs/my_study.yaml") if "preferred_ft" in b]

    def add_entry(config: dict) -> None:
        config["variants"][README_VARIANT] = entry["variants"][README_VARIANT]
        config["grid"]["variants"].append(README_VARIANT)

    edit_smoke_config(work, add_entry)
    return README_VARIANT


def store(work: Path):
    """A smoke study's MLflow store: (study folder, study_run.json, client, every run)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    study = work / "results" / "smoke"
    info = json.loads((study / "mlflow" / "study_run.json").read_text())
    mlflow.set_tracking_uri(info["tracking_uri"])  # artifact URIs of a server store resolve through it
    client = MlflowClient(info["tracking_uri"])
    runs = client.search_runs([info["experiment_id"]], max_results=5000)
    return study, info, client, runs


from dpolab.judge_server import free_port  # noqa: E402 (one helper for every test server's port)


@dataclass
class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 with its own sqlite backend and artifact root."""

    root: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    extra_args: tuple[str, ...] = ()  # e.g. ("--app-name", "basic-auth")
    env: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> "MlflowServer":
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "server.log", "w")
        self.process = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{self.root / 'server.db'}",
             "--artifacts-destination", str(self.root / "artifacts"), *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.root,  # the auth app's basic_auth.db
            env=dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", **self.env),
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
class SlurmCluster:
    """The real single-node SLURM of tests/slurm/start.sh (slurmctld, slurmd, munged on
    127.0.0.1, state under `state`); stop() stops exactly what start() started."""

    state: Path
    conf: Path | None = None

    @property
    def env(self) -> dict:
        return dict(os.environ, SLURM_CONF=str(self.conf), DPOLAB_SLURM_DIR=str(self.state))

    def start(self) -> "SlurmCluster":
        from dpolab.config import ROOT

        done = subprocess.run(["bash", str(ROOT / "tests" / "slurm" / "start.sh")], capture_output=True, text=True,
                              env=dict(os.environ, DPOLAB_SLURM_DIR=str(self.state)), timeout=600)
        assert done.returncode == 0, f"SLURM did not start: {done.stdout[-2000:]} {done.stderr[-3000:]}"
        self.conf = Path(done.stdout.strip().splitlines()[-1])
        return self

    def stop(self) -> None:
        from dpolab.config import ROOT

        subprocess.run(["bash", str(ROOT / "tests" / "slurm" / "stop.sh")], env=self.env, timeout=120, check=False)

    def command(self, *args: str) -> str:
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True, check=True, timeout=60).stdout


# The shipped profile plus what is particular to this one-node test site: one thread per job
# (as the local run), three jobs in flight, and a 2 s first status check (the profile's 20 s
# suits a real cluster; here it would dominate jobs that take seconds).
# --max-threads caps every rule, rule variants and a rule file added by a test included (a job
# asking for more CPUs than the node has would stay PENDING with reason PartitionConfig).
SLURM_ARGS = ["--profile", "profiles/slurm", "--jobs", "3", "--slurm-init-seconds-before-status-checks", "2",
              "--max-threads", "1"]


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
                cluster.command("scancel", job_id)
                lost["cancelled"] = {"run_id": run.info.run_id, "slurm_job_id": job_id}
            elif name == "generate/policy~sft" and "timed_out" not in lost:
                limit = cluster.command("squeue", "-h", "-j", job_id, "-o", "%l").strip()  # from the rule's runtime
                cluster.command("scontrol", "update", f"JobId={job_id}", "EndTime=now")
                # slurmctld checks time limits on its own period (tens of seconds): on a quiet machine the
                # job could finish first. Paused, it is still there when SLURM enforces the limit (its
                # SIGTERM waits, the SIGKILL after KillWait does not).
                try:
                    os.kill(int(run.data.tags["pid"]), signal.SIGSTOP)
                except ProcessLookupError:
                    pass
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
    slurm_command = [str(BIN / "snakemake"), "--configfile", "configs/smoke.yaml",
                     "--config", f"mlflow={{tracking_uri: '{server.url}'}}", *SLURM_ARGS]
    slurm_env = dict(slurm_cluster.env, OMP_NUM_THREADS="1")
    started = time.monotonic()
    try:
        with open(root / "sqlite.log", "w") as sqlite_log:
            sqlite_run = subprocess.Popen(SMOKE_COMMAND, cwd=sqlite_work, env=env, stdout=sqlite_log, stderr=subprocess.STDOUT)
            first = subprocess.Popen(slurm_command, cwd=server_work, env=slurm_env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
            lost = _lose_jobs_while_running(slurm_cluster, server.url, first)
            first_output, _ = first.communicate(timeout=1500)
            (root / "slurm_faults.log").write_text(first_output)
            # Snakemake logs to stderr: one stream, as the first launch's
            rerun = subprocess.run(slurm_command, cwd=server_work, env=slurm_env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, timeout=1800)
            (root / "slurm_rerun.log").write_text(rerun.stdout)
            slurm_wall_s = time.monotonic() - started
            assert rerun.returncode == 0, rerun.stdout[-8000:]
            assert sqlite_run.wait(timeout=1500) == 0, (root / "sqlite.log").read_text()[-6000:]
        yield SmokeStudies(sqlite_work, server_work, server, slurm_cluster, (root / "sqlite.log").read_text(),
                           subprocess.CompletedProcess(slurm_command, first.returncode, first_output, ""), rerun,
                           lost, time.monotonic() - started, slurm_wall_s)
    finally:
        server.stop()


def copy_study(work: Path, dest: Path) -> Path:
    """A copy of a finished smoke study's work folder (workflow, configs and results, times kept, so
    Snakemake sees the copied outputs as up to date) with its own MLflow store: the sqlite file's
    experiment and study_run.json point at the copy, so nothing written there reaches `work`."""
    import sqlite3

    shutil.copytree(work, dest, symlinks=True, ignore=shutil.ignore_patterns(".snakemake"))
    study = dest / "results" / "smoke"
    run_file = study / "mlflow" / "study_run.json"
    info = json.loads(run_file.read_text())
    info["tracking_uri"] = f"sqlite:///{study / 'mlflow.db'}"
    times = run_file.stat()
    run_file.write_text(json.dumps(info, indent=2))
    os.utime(run_file, ns=(times.st_atime_ns, times.st_mtime_ns))  # every job's input: as old as before
    with sqlite3.connect(study / "mlflow.db") as db:
        db.execute("UPDATE experiments SET artifact_location = replace(artifact_location, ?, ?)", (str(work), str(dest)))
        db.execute("UPDATE runs SET artifact_uri = replace(artifact_uri, ?, ?)", (str(work), str(dest)))
    return dest
