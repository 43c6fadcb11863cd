"""Checks of a study against this machine, made when the workflow is parsed (dry runs too),
before any job: the model package and files, what the data can give, local data files, and the
MLflow tracking store. Each failure is one ConfigError naming the config key (and the file).

Light on purpose: no torch, transformers, vLLM or MLflow import (see dpolab.config).
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from dpolab.errors import ConfigError
from dpolab.study import Study


def check_environment(study: Study, workdir: Path) -> None:
    check_model(study.config["model"])
    check_data(study.config["data"])
    check_judge_paths(study.config["judges"])
    check_unpaired_files(study)
    check_tracking_uri(tracking_uri(study.config, Path(workdir) / study.results_dir))


def check_model(model) -> None:
    """The offline model (package/scratch: the tokenizer comes from the package's GGUF too) must
    be installed; a local model must be a transformers folder."""
    from dpolab.locate import gguf_path

    if model["source"] in ("package", "scratch"):
        try:
            gguf_path(model)
        except FileNotFoundError as error:
            raise ConfigError(str(error)) from None
    elif model["source"] == "local":
        check_model_folder(model["path"], "model")


def check_data(data) -> None:
    """The prompt counts must fit the splits of the IMDb reviews (the data job draws each
    prompt from a distinct review)."""
    from dpolab.data import count_imdb_reviews, split_sizes

    try:
        n_reviews = count_imdb_reviews()
    except (FileNotFoundError, ValueError) as error:
        raise ConfigError(f"data.source: {error}") from None
    sizes = split_sizes(n_reviews, data["eval_fraction"], data["test_fraction"])
    if sizes["eval"] == 0:  # the SFT stage evaluates on the eval split's texts
        raise ConfigError(f"data.eval_fraction: {data['eval_fraction']} of the {n_reviews} IMDb reviews is no review; "
                          f"at least {1 / n_reviews:.2g} (one review) is needed for the SFT evaluation texts")
    for split, key, fraction in (("train", "n_train_prompts", None), ("test", "n_test_prompts", "test_fraction")):
        if data[key] > sizes[split]:
            hint = f" (or raise data.{fraction})" if fraction else " (or lower data.eval_fraction / data.test_fraction)"
            raise ConfigError(f"data.{key}: {data[key]} prompts asked, but the {split} split has {sizes[split]} of the "
                              f"{n_reviews} IMDb reviews; at most {sizes[split]}{hint}")


def check_model_folder(path: str, section: str) -> None:
    """A local transformers model: a folder with the config.json that save_pretrained writes."""
    folder = Path(path)
    if not folder.is_dir():
        raise ConfigError(f"{section}.path: {str(folder)!r} is not a folder ({section}.source is 'local')")
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{section}.path: {folder / 'config.json'} not found (a transformers model folder has a "
                          "config.json, from save_pretrained)")


def check_judge_paths(judges) -> None:
    for name, spec in judges.items():
        if spec["kind"] in ("reward_model", "llm_pairwise") and spec.get("source") == "local":
            check_model_folder(spec["path"], f"judges.{name}")


def check_unpaired_files(study: Study) -> None:
    """KTO's own unpaired data, when it is a local file: readable, with the columns and with
    boolean labels of both kinds, now rather than when the kto job starts."""
    from dpolab.unpaired import check_unpaired_source

    for name in study.grid_variants:
        source = study.variants[name].params.get("unpaired_data")
        if source is not None:
            try:
                check_unpaired_source(source)
            except ValueError as error:
                raise ConfigError(f"variants.{name}.unpaired_data: {error}") from None


def tracking_uri(config, study_dir: Path | str) -> str:
    """The configured URI, or a sqlite file under the study's results folder."""
    return config["mlflow"]["tracking_uri"] or f"sqlite:///{Path(study_dir).resolve() / 'mlflow.db'}"


def check_tracking_uri(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (before any job, dry runs too) when the tracking store cannot be used: an HTTP
    server must answer MLflow's REST API (MLflow's own client retries for minutes, inside every
    job); a sqlite file's folder must be creatable and writable. Nothing is created here."""
    if uri.startswith(("http://", "https://")):
        url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
        request = urllib.request.Request(url)
        user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
        if user and password:  # MLflow's basic-auth app: the credentials MLflow's client will send
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            if error.code in (401, 403):
                hint = (" (it refused the credentials in MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)" if user
                        else " (it wants credentials: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD in the "
                             "environment)")
            elif error.code in (404, 405):
                hint = " (no MLflow REST API there: is it an MLflow tracking server, and the URI its root?)"
            else:
                hint = ""
            raise ConfigError(f"mlflow.tracking_uri: the MLflow tracking server at {uri} answered HTTP {error.code}"
                              f"{hint}") from None
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            raise ConfigError(f"mlflow.tracking_uri: cannot reach the MLflow tracking server at {uri} ({reason}); "
                              "start it (mlflow server ...) or fix the URI") from None
        try:
            answer = json.loads(body)
        except ValueError:  # UnicodeDecodeError and JSONDecodeError both
            answer = None
        if not isinstance(answer, dict):  # an HTML page, another service
            raise ConfigError(f"mlflow.tracking_uri: the server at {uri} answered, but not as an MLflow tracking "
                              f"server (not the JSON of MLflow's REST API: {body[:60]!r}); check the host and port")
    elif uri.startswith("sqlite:///"):
        store = Path(uri.removeprefix("sqlite:///"))
        if store.exists():
            if store.is_dir() or not os.access(store, os.W_OK):
                raise ConfigError(f"mlflow.tracking_uri: the sqlite store {store} is not a writable file")
            return
        existing = store.parent
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"mlflow.tracking_uri: cannot create the sqlite store {store}: {existing} is not a "
                              "writable folder")
    else:  # load_study refuses other schemes first; this guards direct callers
        raise ConfigError(f"mlflow.tracking_uri: {uri!r} is not an http(s):// or sqlite:/// URI")
