"""The MLflow layer against a real `mlflow server` with MLflow's basic-auth app (a server start and
password hashing take tens of seconds on a 2-core machine). (The sqlite store: tests/unit/test_tracking.py.)"""

import pytest
from mlflow.tracking import MlflowClient

from dpolab import tracking
from dpolab.errors import ConfigError


def test_a_basic_auth_server_is_checked_with_the_credentials_of_the_environment(tmp_path, monkeypatch):
    """The safe server for a cluster (docs/clusters.md): MLflow's basic-auth app, credentials only in the
    environment (MLflow's client sends them; the workflow's check must send them too)."""
    from helpers.services import MlflowServer

    password = "not-in-any-config"
    server = MlflowServer(
        tmp_path / "auth",
        extra_args=("--app-name", "basic-auth"),
        env={"MLFLOW_AUTH_ADMIN_PASSWORD": password, "MLFLOW_FLASK_SERVER_SECRET_KEY": "test"},
    ).start()
    # the auth app hashes the password on each request (seconds of CPU on a loaded 2-core machine):
    # a generous timeout, since what is tested here is the credentials, not the reachability check
    timeout = 30.0
    try:
        monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
        monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
        with pytest.raises(
            ConfigError, match=r"answered HTTP 401 \(it wants credentials: set MLFLOW_TRACKING_USERNAME"
        ):
            tracking.check_tracking_uri(server.url, timeout=timeout)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
        with pytest.raises(ConfigError, match=r"answered HTTP 401 \(it refused the credentials"):
            tracking.check_tracking_uri(server.url, timeout=timeout)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        tracking.check_tracking_uri(server.url, timeout=timeout)
        assert [e.name for e in MlflowClient(server.url).search_experiments()] == ["Default"]  # MLflow's client too
    finally:
        server.stop()
