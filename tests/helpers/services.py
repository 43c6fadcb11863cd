"""Real services a test starts and stops: an `mlflow server` over HTTP and the one-node SLURM of
tests/slurm/start.sh."""

import os
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from dpolab.judge_server import free_port  # one helper for every test server's port
from helpers.workflow import BIN

__all__ = ["SLURM_ARGS", "MlflowServer", "SlurmCluster", "free_port"]


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
            [
                str(BIN / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{self.root / 'server.db'}",
                "--artifacts-destination",
                str(self.root / "artifacts"),
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.root,  # the auth app's basic_auth.db
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

        done = subprocess.run(
            ["bash", str(ROOT / "tests" / "slurm" / "start.sh")],
            capture_output=True,
            text=True,
            env=dict(os.environ, DPOLAB_SLURM_DIR=str(self.state)),
            timeout=600,
        )
        assert done.returncode == 0, f"SLURM did not start: {done.stdout[-2000:]} {done.stderr[-3000:]}"
        self.conf = Path(done.stdout.strip().splitlines()[-1])
        return self

    def stop(self) -> None:
        from dpolab.config import ROOT

        subprocess.run(["bash", str(ROOT / "tests" / "slurm" / "stop.sh")], env=self.env, timeout=120, check=False)

    def command(self, *args: str, tries: int = 1) -> str:
        """A SLURM command's output; one that fails `tries` times (a second apart) fails the test
        with its stderr."""
        for _ in range(tries):
            done = subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=60)
            if done.returncode == 0:
                return done.stdout
            time.sleep(1)
        raise AssertionError(f"{' '.join(args)} failed {tries} time(s): {done.stderr.strip()} {done.stdout.strip()}")


# The shipped profile plus what is particular to this one-node test site: one thread per job
# (as the local run), three jobs in flight, and a 2 s first status check (the profile's 20 s
# suits a real cluster; here it would dominate jobs that take seconds).
# --max-threads caps every rule, rule variants and a rule file added by a test included (a job
# asking for more CPUs than the node has would stay PENDING with reason PartitionConfig).
SLURM_ARGS = [
    "--profile",
    "profiles/slurm",
    "--jobs",
    "3",
    "--slurm-init-seconds-before-status-checks",
    "2",
    "--max-threads",
    "1",
]
