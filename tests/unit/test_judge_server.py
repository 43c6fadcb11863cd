"""dpolab.judge_server, without starting vLLM. Pinned: free_port gives a port one can bind;
server_command is the vLLM OpenAI server on 127.0.0.1 in fp32, eager, seeded (served name and
extra arguments added); server_env caps the CPU KV cache, leaves OpenMP unpinned, keeps the hub
offline and the cache in the given folder without touching os.environ; local_judges picks the
llm_http judges on this machine with a servable model; model_dir_for reuses a materialised folder;
healthy() is False where nothing listens and True where /health answers 200; start() does nothing
when a server already answers; stop() ends the process group it recorded; VllmServer's paths and
URL before it starts; main() on a config without a local judge."""

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

from dpolab.config import ROOT
from dpolab.judge_server import (
    SERVABLE,
    VllmServer,
    free_port,
    healthy,
    local_judges,
    main,
    model_dir_for,
    server_command,
    server_env,
    start,
    stop,
)

SERVED = "smollm2-135m-instruct"


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def health_server():
    """A stand-in for a server that answers /health (the network service start() asks)."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_free_port_can_be_bound():
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_server_command_runs_the_openai_server_on_localhost():
    assert server_command("/models/m", 8123) == [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        "/models/m",
        "--host",
        "127.0.0.1",
        "--port",
        "8123",
        "--dtype",
        "float32",
        "--max-model-len",
        "2048",
        "--enforce-eager",
        "--seed",
        "0",
    ]


def test_server_command_adds_the_served_name_last_and_extra_arguments():
    command = server_command("m", 1, served_name=SERVED, max_model_len=256, extra_args=("--max-num-seqs", "4"))
    assert command[-2:] == ["--served-model-name", SERVED]
    assert command[command.index("--max-model-len") + 1] == "256"
    assert command[command.index("--max-num-seqs") + 1] == "4"


def test_server_env_sets_the_cpu_settings_and_leaves_os_environ_alone(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("VLLM_CACHE_ROOT", raising=False)  # an engine started earlier in this process sets it
    monkeypatch.setenv("DPOLAB_TEST_MARKER", "kept")
    env = server_env(tmp_path / "cache")
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1" and env["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
    assert env["HF_HUB_OFFLINE"] == "1" and env["VLLM_CACHE_ROOT"] == str(tmp_path / "cache")
    assert env["OMP_NUM_THREADS"] == "1" and env["DPOLAB_TEST_MARKER"] == "kept"
    assert "VLLM_CACHE_ROOT" not in os.environ and "OMP_NUM_THREADS" not in os.environ


def test_server_env_keeps_a_thread_count_the_caller_set(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert server_env(tmp_path)["OMP_NUM_THREADS"] == "3"


def test_local_judges_are_the_servable_llm_http_judges_on_this_machine():
    config = {
        "judges": {
            "gold": {"kind": "gold"},
            "local": {"kind": "llm_http", "base_url": "http://127.0.0.1:8011/v1", "model": SERVED},
            "by_name": {"kind": "llm_http", "base_url": "http://localhost/v1", "model": SERVED},
            "remote": {"kind": "llm_http", "base_url": "https://api.example.com/v1", "model": SERVED},
            "other_model": {"kind": "llm_http", "base_url": "http://127.0.0.1:8012/v1", "model": "gpt-4o"},
            "no_url": {"kind": "llm_http", "model": SERVED},
        }
    }
    assert local_judges(config) == [("local", 8011, SERVED), ("by_name", 80, SERVED)]
    assert local_judges({}) == [] and local_judges({"judges": None}) == []


def test_model_dir_for_reuses_a_materialised_folder(tmp_path):
    folder = tmp_path / "models" / SERVED
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    assert model_dir_for(SERVED, root=tmp_path) == folder
    assert SERVABLE[SERVED]["source"] == "package"  # made offline from the package's GGUF


def test_healthy_is_false_where_nothing_listens():
    assert healthy(free_port(), timeout=1) is False


def test_healthy_is_true_where_health_answers_200(health_server):
    assert healthy(health_server) is True


def test_start_is_a_no_op_when_a_server_answers(health_server, tmp_path):
    message = start(health_server, SERVED, root=tmp_path)
    assert message == f"a server already answers on 127.0.0.1:{health_server}"
    assert list(tmp_path.iterdir()) == []  # no model made, no record written


def test_stop_without_a_record_says_so(tmp_path):
    assert stop(8999, root=tmp_path) == "no server started here on port 8999"


def test_stop_ends_the_recorded_process_group_and_removes_the_record(tmp_path):
    process = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        (tmp_path / "server-8998.json").write_text(json.dumps({"pid": process.pid, "model": SERVED, "port": 8998}))
        assert stop(8998, root=tmp_path) == f"stopped the judge server on port 8998 (pid {process.pid})"
        assert process.wait(timeout=10) == -signal.SIGTERM
        assert not (tmp_path / "server-8998.json").exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_vllm_server_before_start(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model").mkdir()
    server = VllmServer("model", port=8997, work="work")
    assert server.work == tmp_path / "work" and server.work.is_dir()
    assert server.model_dir == tmp_path / "model"  # an existing folder made absolute
    assert server.url == "http://127.0.0.1:8997/v1" and server.model == str(tmp_path / "model")
    assert server.log_path == tmp_path / "work" / "vllm-server-8997.log" and server.log_tail() == "(no log)"
    server.stop()  # nothing started: a no-op
    named = VllmServer("org/hub-model", port=8996, served_model_name=SERVED, work=tmp_path / "w2")
    assert named.model_dir == "org/hub-model" and named.model == SERVED


def test_main_on_a_config_without_a_local_judge(capsys):
    config = ROOT / "configs" / "smoke.yaml"
    assert main(["--config", str(config)]) == 0
    assert capsys.readouterr().out.startswith(f"{config}: no llm_http judge on 127.0.0.1")
