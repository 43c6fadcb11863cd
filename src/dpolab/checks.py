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
    if study.preferences:
        check_preference_data(study)
    else:
        check_data(study.config["data"])
    check_judge_paths(study.config["judges"])
    check_http_judges(study.config["judges"])
    check_unpaired_files(study)
    check_gpu_precision(study.training.precision if study.device == "cuda" else None)
    check_tracking_uri(tracking_uri(study.config, Path(workdir) / study.results_dir))


def visible_gpus() -> list[tuple[str, float]]:
    """(name, compute capability) of this machine's NVIDIA GPUs, from nvidia-smi (no torch import);
    empty where there is none (a login node) or nvidia-smi cannot tell."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        return [(name.strip(), float(cap)) for name, cap in (line.rsplit(",", 1) for line in out.strip().splitlines())]
    except (OSError, subprocess.SubprocessError, ValueError):
        return []


# bf16 arithmetic needs compute capability 8.0 (Ampere: A100, A10, RTX 30xx) or newer
BF16_COMPUTE_CAPABILITY = 8.0


def check_gpu_precision(precision: str | None, gpus: list[tuple[str, float]] | None = None) -> None:
    """bf16 training refused where the GPUs this machine shows cannot do it (a cluster's nodes are
    checked again by each training job itself)."""
    gpus = visible_gpus() if gpus is None and precision == "bf16" else (gpus or [])
    if precision == "bf16" and gpus and all(cap < BF16_COMPUTE_CAPABILITY for _, cap in gpus):
        names = ", ".join(f"{name} ({cap:g})" for name, cap in gpus)
        raise ConfigError(
            f"training.precision: bf16 needs GPUs of compute capability {BF16_COMPUTE_CAPABILITY:g} or newer; "
            f"this machine has {names}: set training.precision: fp16 (or fp32)"
        )


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
        raise ConfigError(
            f"data.eval_fraction: {data['eval_fraction']} of the {n_reviews} IMDb reviews is no review; "
            f"at least {1 / n_reviews:.2g} (one review) is needed for the SFT evaluation texts"
        )
    for split, key, fraction in (("train", "n_train_prompts", None), ("test", "n_test_prompts", "test_fraction")):
        if data[key] > sizes[split]:
            hint = f" (or raise data.{fraction})" if fraction else " (or lower data.eval_fraction / data.test_fraction)"
            raise ConfigError(
                f"data.{key}: {data[key]} prompts asked, but the {split} split has {sizes[split]} of the "
                f"{n_reviews} IMDb reviews; at most {sizes[split]}{hint}"
            )


def check_preference_data(study: Study) -> None:
    """A local preference file or save_to_disk folder: there, with the mapped columns, a test split
    that can exist, and a chat template on the model when the rows are conversations. Rows are
    checked one by one by the data job (with their row numbers); a Hub dataset is read there too."""
    from dpolab.preference_data import check_columns, is_local

    data = study.data
    if is_local(data.path):
        path = Path(data.path).expanduser()
        try:
            columns, first, splits = peek_dataset(path, data.train_split)
        except ValueError as error:
            raise ConfigError(f"data.path: {error}") from None
        if splits is None and data.test_split:
            raise ConfigError(
                f"data.test_split: {path} is a single file with one split; hold test prompts out of it "
                "with data.test_fraction (leave test_split out), or use a save_to_disk folder with splits"
            )
        if splits is not None and data.test_split and data.test_split not in splits:
            raise ConfigError(f"data.test_split: {path} has no split {data.test_split!r} (splits: {', '.join(splits)})")
        try:
            check_columns(columns, data.column_map, str(path))
        except ValueError as error:
            raise ConfigError(f"data.columns: {error}") from None
        prompt_column = data.column_map["prompt"]
        if prompt_column and prompt_column != "prompt" and prompt_column not in columns:
            raise ConfigError(
                f"data.columns.prompt: {path} has no column {prompt_column!r} (has "
                f"{', '.join(map(str, columns))}); set columns.prompt: null when chosen and rejected hold "
                "whole conversations"
            )
        chosen = first.get(data.column_map["chosen"]) if first else None
        if isinstance(chosen, list) and not model_has_chat_template(study.config["model"]):
            raise ConfigError(
                f"model: {model_name(study.config['model'])} has no chat template, and {path} is "
                "conversational (lists of role/content messages); use a model with one (an instruct "
                "model) or data in the standard format (strings)"
            )
    if study.sft_source == "dataset":
        dataset = study.sft_data.dataset
        if is_local(dataset["path"]):
            try:
                columns, _, _ = peek_dataset(Path(dataset["path"]).expanduser(), dataset["split"])
            except ValueError as error:
                raise ConfigError(f"sft.dataset.path: {error}") from None
            if not ("messages" in columns or {"prompt", "completion"} <= set(columns) or "text" in columns):
                raise ConfigError(
                    f"sft.dataset.path: {dataset['path']} has columns {', '.join(map(str, columns))}; an SFT "
                    "dataset needs a messages column, prompt and completion columns, or a text column"
                )


def peek_dataset(path: Path, split: str) -> tuple[list[str], dict | None, list[str] | None]:
    """(columns, first row or None, split names or None for a single file) without reading the data:
    a file's header or first line, or a save_to_disk folder's JSON descriptions."""
    from dpolab.preference_data import FILE_SUFFIXES, file_columns, first_line, first_row

    if path.is_dir():
        splits = None
        if (path / "dataset_dict.json").is_file():
            splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
            if split not in splits:
                raise ValueError(f"{path} has no split {split!r} (splits: {', '.join(splits)}); set data.train_split")
            path = path / split
        info = path / "dataset_info.json"
        if not info.is_file():
            raise ValueError(f"{path} is not a folder written by datasets' save_to_disk (no dataset_info.json)")
        features = json.loads(info.read_text()).get("features", {})
        first = {
            name: (
                [] if isinstance(f, list) or (isinstance(f, dict) and f.get("_type") in ("List", "Sequence")) else ""
            )
            for name, f in features.items()
        }
        return list(features), first, splits or []
    if path.suffix not in FILE_SUFFIXES:
        raise ValueError(f"{path}: not a data file ({', '.join(FILE_SUFFIXES)}) or a save_to_disk folder")
    if not path.is_file():
        raise ValueError(f"{path} not found")
    try:
        columns = file_columns(path)
        first = first_row(path)
    except Exception as error:
        raise ValueError(f"cannot read {path} as {path.suffix[1:]}: {first_line(error)}") from None
    if first is None:
        raise ValueError(f"{path} has no rows")
    return columns, first, None


def model_name(model) -> str:
    return model.get("path") or model.get("gguf_file") or model["source"]


def model_has_chat_template(model) -> bool:
    """Whether the study's tokenizer has a chat template; True when it cannot be told without a
    download (a Hub model not in the cache: the data job checks it)."""
    from dpolab.locate import gguf_path

    if model["source"] in ("package", "scratch"):
        # GGUF keeps its metadata (the template among it) at the start of the file: a byte search of
        # the header, rather than parsing the whole file (seconds)
        with gguf_path(model).open("rb") as handle:
            return b"tokenizer.chat_template" in handle.read(16 * 2**20)
    if model["source"] == "local":
        folder = Path(model["path"])
        config = folder / "tokenizer_config.json"
        return (folder / "chat_template.jinja").is_file() or (
            config.is_file() and bool(json.loads(config.read_text()).get("chat_template"))
        )
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model["path"], "tokenizer_config.json", revision=model.get("revision"))
    except Exception:
        return True
    return bool(json.loads(Path(found).read_text()).get("chat_template")) if isinstance(found, str) else True


def check_http_judges(judges) -> None:
    """An HTTP judge's endpoint must answer and serve the model, with the API key (when named) set."""
    from dpolab.http_judge import check_endpoint

    for name, spec in judges.items():
        if spec["kind"] != "llm_http":
            continue
        where = f"judges.{name}"
        api_key = None
        if spec.get("api_key_env"):
            api_key = os.environ.get(spec["api_key_env"])
            if not api_key:
                raise ConfigError(
                    f"{where}.api_key_env: the environment variable {spec['api_key_env']} is not set "
                    "(it holds the endpoint's API key); export it before running the study"
                )
        check_endpoint(spec["base_url"], spec["model"], api_key=api_key, where=where)


def check_model_folder(path: str, section: str) -> None:
    """A local transformers model: a folder with the config.json that save_pretrained writes."""
    folder = Path(path)
    if not folder.is_dir():
        raise ConfigError(f"{section}.path: {str(folder)!r} is not a folder ({section}.source is 'local')")
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"{section}.path: {folder / 'config.json'} not found (a transformers model folder has a "
            "config.json, from save_pretrained)"
        )


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
                hint = (
                    " (it refused the credentials in MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)"
                    if user
                    else " (it wants credentials: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD in the "
                    "environment)"
                )
            elif error.code in (404, 405):
                hint = " (no MLflow REST API there: is it an MLflow tracking server, and the URI its root?)"
            else:
                hint = ""
            raise ConfigError(
                f"mlflow.tracking_uri: the MLflow tracking server at {uri} answered HTTP {error.code}{hint}"
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            raise ConfigError(
                f"mlflow.tracking_uri: cannot reach the MLflow tracking server at {uri} ({reason}); "
                "start it (mlflow server ...) or fix the URI"
            ) from None
        try:
            answer = json.loads(body)
        except ValueError:  # UnicodeDecodeError and JSONDecodeError both
            answer = None
        if not isinstance(answer, dict):  # an HTML page, another service
            raise ConfigError(
                f"mlflow.tracking_uri: the server at {uri} answered, but not as an MLflow tracking "
                f"server (not the JSON of MLflow's REST API: {body[:60]!r}); check the host and port"
            )
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
            raise ConfigError(
                f"mlflow.tracking_uri: cannot create the sqlite store {store}: {existing} is not a writable folder"
            )
    else:  # load_study refuses other schemes first; this guards direct callers
        raise ConfigError(f"mlflow.tracking_uri: {uri!r} is not an http(s):// or sqlite:/// URI")
