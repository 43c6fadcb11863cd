"""A battery of bad inputs: each is a Snakemake dry run of the smoke study with ONE thing wrong.

Every one must stop the workflow while it is parsed, before any job: a non-zero exit, a message
`invalid config: <dotted key>: <what is wrong>` naming the offending key (and the file, where a
file is wrong), no Python traceback, and nothing created under the working copy's results/.

The dry runs run in one worker process, through Snakemake's own command-line entry point
(`snakemake.cli.main` with the argv a user types, `--config` strings included, exactly as the
CLI parses them), with stdout and stderr captured: ~0.1 s each where a `snakemake` subprocess
takes ~1.6 s (tests/helpers/inprocess_snakemake.py). A few cases also run as real subprocesses
(test_cli_subprocess_agrees), to show
that the in-process runs print what the command line prints.
"""

from __future__ import annotations

import http.server
import math
import multiprocessing
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from dpolab.config import ROOT
from helpers import inprocess_snakemake
from helpers.workflow import copy_workflow

SMOKE_TEXT = (ROOT / "configs" / "smoke.yaml").read_text()
SMOKE = yaml.safe_load(SMOKE_TEXT)
TRACEBACK = "Traceback (most recent call last)"
# a Python frame inside dpolab in Snakemake's error print: an exception other than ConfigError escaped
DPOLAB_FRAME = re.compile(r'File "[^"]*dpolab/[^"]*\.py", line \d+')
NOT_INSTALLED = "dpolab_no_such_package"
CONFIG_FILE = "<the config file>"  # a Case.key: the message must name the config file (it is not YAML, ...)


# ---- running a dry run -------------------------------------------------------------------------
_WORKER: ProcessPoolExecutor | None = None


def dry_run(work: Path, args: list[str], record_studies: bool = False):
    """`snakemake --dry-run <args>` in `work`, in one spawned worker process that runs them all
    in turn (tests/helpers/inprocess_snakemake.py says why not in pytest's own): (exit status, stdout +
    stderr), and with `record_studies` the resolved config of every Study the parse built."""
    global _WORKER
    if _WORKER is None:
        _WORKER = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    status, output, studies = _WORKER.submit(inprocess_snakemake.dry_run, str(work), args, record_studies).result(300)
    return (status, output, studies) if record_studies else (status, output)


@pytest.fixture(scope="module", autouse=True)
def _stop_worker():
    yield
    global _WORKER
    if _WORKER is not None:
        _WORKER.shutdown()
        _WORKER = None


@pytest.fixture(scope="session")
def work(tmp_path_factory):
    """One copy of the workflow for the whole battery (each case has its own study name and its
    own folder cases/<id>/ for its files); its results/ must never appear."""
    yield copy_workflow(tmp_path_factory.mktemp("bad-inputs") / "work")
    for server in _SERVERS:
        server.shutdown()
        server.server_close()


# -- preference studies (data.source: preferences) ---------------------------------------------------------
EXAMPLE_PREFERENCES = "configs/data/imdb_preferences.jsonl"  # the shipped conversational file (a copy is in `work`)


def preference_study(**data) -> Callable[[dict, Path], None]:
    """smoke.yaml made a preference study on the shipped file: no IMDb sections, a reward model
    trained in the study; `data` adds to (or replaces) its data: section."""

    def edit(config: dict, _where: Path) -> None:
        for section in ("pairs", "judge"):
            config.pop(section, None)
        config["data"] = {"source": "preferences", "path": EXAMPLE_PREFERENCES, "n_train": 16, "n_test": 8, **data}
        config["judges"] = {"rm": {"kind": "reward_model", "source": "study"}}
        config["evaluation"].pop("primary_judge", None)

    return edit


def preference_file(name: str, text: str) -> Callable[[dict, Path], None]:
    def edit(config: dict, where: Path) -> None:
        (where / name).write_text(text)
        config["data"]["path"] = str(where / name)

    return edit


def save_to_disk_folder(splits: list[str]) -> Callable[[dict, Path], None]:
    """A folder laid out as datasets' save_to_disk writes a DatasetDict (its JSON descriptions only)."""
    import json

    def edit(config: dict, where: Path) -> None:
        folder = where / "prefs"
        for split in splits:
            (folder / split).mkdir(parents=True)
            features = {c: {"dtype": "string", "_type": "Value"} for c in ("prompt", "chosen", "rejected")}
            (folder / split / "dataset_info.json").write_text(json.dumps({"features": features}))
        (folder / "dataset_dict.json").write_text(json.dumps({"splits": splits}))
        config["data"]["path"] = str(folder)

    return edit


def model_without_chat_template(config: dict, where: Path) -> None:
    folder = where / "plain_model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "vocab_size": 100}')
    (folder / "tokenizer_config.json").write_text('{"model_max_length": 1024}')
    config["model"] = {"source": "local", "path": str(folder)}


def http_judge(**spec) -> Callable[[dict, Path], None]:
    def edit(config: dict, _where: Path) -> None:
        config["judges"]["llm"] = {"kind": "llm_http", **spec}

    return edit


# ---- the cases ---------------------------------------------------------------------------------
@dataclass
class Case:
    id: str
    key: str  # the dotted config key the message must name
    edit: Callable[[dict, Path], None] | None = None  # changes a copy of smoke.yaml (may write files in cases/<id>/)
    text: Callable[[Path], str] | None = None  # or: the config file's whole text
    config: list[str] = field(default_factory=list)  # --config arguments, as typed
    path: Callable[[Path], object] | None = None  # the file the message must name
    extra_configfile: Callable[[Path], str | Path] | None = None  # a second --configfile's text (a Path: not written)
    unless_root: bool = False  # needs file permissions to apply (they do not stop root): skipped where they do not
    # a file Snakemake itself refuses before the workflow is parsed: its message
    snakemake_message: str | None = None
    # why a refusal falls short in a way no file of this project can change (Snakemake's own handling,
    # before the Snakefile runs): the test is marked xfail with it, and passes once Snakemake is fixed
    known_hole: str | None = None


def setting(dotted: str, value) -> Callable[[dict, Path], None]:
    """An edit setting one dotted key (parents created as needed)."""

    def edit(config: dict, _folder: Path) -> None:
        *parents, last = dotted.split(".")
        node = config
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return edit


def deleting(dotted: str) -> Callable[[dict, Path], None]:
    def edit(config: dict, _folder: Path) -> None:
        *parents, last = dotted.split(".")
        node = config
        for key in parents:
            node = node[key]
        del node[last]

    return edit


def edits(*steps) -> Callable[[dict, Path], None]:
    def edit(config: dict, folder: Path) -> None:
        for step in steps:
            step(config, folder)

    return edit


def bad(id: str, key: str, *steps, **options) -> Case:
    return Case(id, key, edit=edits(*steps) if steps else None, **options)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- KTO's unpaired data files: each case writes its file into its own folder --------------------
GOOD_ROWS = [
    {"prompt": "The film", "completion": " was great", "label": True},
    {"prompt": "The film", "completion": " was dull", "label": False},
]


def _write_frame(path: Path, rows: list[dict]) -> None:
    import pandas as pd

    frame = pd.DataFrame(rows)
    if path.suffix == ".parquet":
        frame.to_parquet(path)
    elif path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_csv(path, index=False)


def unpaired(
    name: str,
    *,
    rows: list[dict] | None = None,
    raw: bytes | None = None,
    mode: int | None = None,
    folder: bool = False,
) -> Callable[[dict, Path], None]:
    """Point variants.kto.unpaired_data at cases/<id>/<name>, written as asked (or not at all)."""

    def edit(config: dict, where: Path) -> None:
        path = where / name
        if folder:
            path.mkdir()
        elif raw is not None:
            path.write_bytes(raw)
        elif rows is not None:
            _write_frame(path, rows)
        if mode is not None:
            path.chmod(mode)
        config["variants"]["kto"]["unpaired_data"] = str(path)

    return edit


def unpaired_path(name: str) -> Callable[[Path], Path]:
    return lambda where: where / name


def without(column: str) -> list[dict]:
    return [{k: v for k, v in row.items() if k != column} for row in GOOD_ROWS]


def labelled(*labels) -> list[dict]:
    return [dict(GOOD_ROWS[i % 2], label=label) for i, label in enumerate(labels)]


GARBAGE = bytes(range(256)) * 8


# -- model and judge folders -----------------------------------------------------------------------
def empty_folder(name: str) -> Callable[[Path], Path]:
    def make(where: Path) -> Path:
        (where / name).mkdir(exist_ok=True)
        (where / name / "model.safetensors").write_bytes(b"")  # anything but config.json
        return where / name

    return make


def local_model(name: str, make_folder: bool) -> Callable[[dict, Path], None]:
    def edit(config: dict, where: Path) -> None:
        path = empty_folder(name)(where) if make_folder else where / name
        config["model"] = {"source": "local", "path": str(path)}

    return edit


def reward_judge(folder: Callable[[Path], Path] | None, **spec) -> Callable[[dict, Path], None]:
    """Add a reward_model judge `rm` (from a local folder made by `folder`, unless spec says otherwise)."""

    def edit(config: dict, where: Path) -> None:
        entry = {"kind": "reward_model", "source": "local", **spec}
        if folder is not None:
            entry["path"] = str(folder(where))
        config["judges"]["rm"] = entry

    return edit


# -- the tracking store ------------------------------------------------------------------------------
def sqlite_under_a_file(config: dict, where: Path) -> None:
    (where / "plain_file").write_text("not a folder")
    config["mlflow"] = {"tracking_uri": f"sqlite:///{where / 'plain_file' / 'store' / 'mlflow.db'}"}


def sqlite_store_is_a_folder(config: dict, where: Path) -> None:
    (where / "mlflow.db").mkdir()
    config["mlflow"] = {"tracking_uri": f"sqlite:///{where / 'mlflow.db'}"}


def sqlite_under_read_only_folder(config: dict, where: Path) -> None:
    (where / "locked").mkdir()
    (where / "locked").chmod(0o555)
    config["mlflow"] = {"tracking_uri": f"sqlite:///{where / 'locked' / 'mlflow.db'}"}


def http_not_listening(config: dict, _where: Path) -> None:
    config["mlflow"] = {"tracking_uri": f"http://127.0.0.1:{free_port()}"}


class _NotMlflow(http.server.BaseHTTPRequestHandler):
    """A web server that is not MLflow: an HTML page under /html/, 404 elsewhere."""

    def do_GET(self):
        found = self.path.startswith("/html/")
        body = b"<html><body>Welcome to nginx!</body></html>" if found else b"not found"
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


_SERVERS: list[http.server.ThreadingHTTPServer] = []


def not_mlflow_server() -> str:
    """URL of a local web server that answers, but not as MLflow (started once, stopped with `work`)."""
    if not _SERVERS:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotMlflow)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        _SERVERS.append(server)
    return f"http://127.0.0.1:{_SERVERS[0].server_address[1]}"


def http_not_mlflow(path: str) -> Callable[[dict, Path], None]:
    def edit(config: dict, _where: Path) -> None:
        config["mlflow"] = {"tracking_uri": not_mlflow_server() + path}

    return edit


# -- config files written by hand ----------------------------------------------------------------------
def smoke_with(study: str, insert_after: str, lines: str) -> Callable[[Path], str]:
    """smoke.yaml's own text (its comments and layout) with `lines` inserted after the line
    starting with `insert_after`."""

    def text(_where: Path) -> str:
        out = []
        for line in SMOKE_TEXT.splitlines():
            out.append(f"study: {study}" if line.startswith("study:") else line)
            if line.startswith(insert_after):
                out.extend(lines.splitlines())
        return "\n".join(out) + "\n"

    return text


def smoke_replaced(study: str, old: str, new: str) -> Callable[[Path], str]:
    def text(_where: Path) -> str:
        assert old in SMOKE_TEXT
        return SMOKE_TEXT.replace("study: smoke", f"study: {study}").replace(old, new)

    return text


LOCKED = 0o000
SNAKEMAKE_READS_CONFIGFILES = (
    "Snakemake reads each --configfile before the Snakefile runs, and its message "
    "(snakemake/common/configfile.py) does not name the file"
)

CASES: list[Case] = [
    # ---- study -----------------------------------------------------------------------------------
    bad("study-300-characters", "study", setting("study", "s" * 300)),
    bad("study-slash", "study", setting("study", "smoke/../x")),
    bad("study-space", "study", setting("study", "my study")),
    bad("study-empty", "study", setting("study", "")),
    bad("study-number", "study", setting("study", 5)),
    bad("study-missing", "study", deleting("study")),
    # ---- device -----------------------------------------------------------------------------------
    bad("device-unknown", "device", setting("device", "tpu")),
    # ---- model --------------------------------------------------------------------------------------
    bad("model-source-unknown", "model.source", setting("model.source", "ollama")),
    bad("model-unknown-key", "model.paht", setting("model.paht", "x")),
    bad("scratch-package-not-installed", "model.package", setting("model.package", NOT_INSTALLED)),
    bad(
        "package-model-package-not-installed",
        "model.package",
        setting("model", {"source": "package", "package": NOT_INSTALLED}),
    ),
    bad(
        "package-model-gguf-not-in-package",
        "model.gguf_file",
        setting("model", {"source": "package", "gguf_file": "SmolLM2-1.7B.Q8_0.gguf"}),
    ),
    bad("scratch-heads-do-not-divide", "model.scratch.hidden_size", setting("model.scratch.hidden_size", 129)),
    bad(
        "scratch-odd-head-size",
        "model.scratch.hidden_size",  # 130 / 2 = 65: RoPE rotates pairs of dimensions
        setting("model.scratch.hidden_size", 130),
    ),
    bad("hub-model-id-with-spaces", "model.path", setting("model", {"source": "hub", "path": "not a hub id!!"})),
    bad("hub-model-id-three-parts", "model.path", setting("model", {"source": "hub", "path": "org/team/model"})),
    bad("scratch-no-layers", "model.scratch.num_hidden_layers", setting("model.scratch.num_hidden_layers", 0)),
    bad("scratch-seed-1.0", "model.scratch.seed", setting("model.scratch.seed", 1.0)),
    bad("scratch-unknown-key", "model.scratch.hidden", setting("model.scratch.hidden", 64)),
    bad(
        "local-model-without-config-json",
        "model.path",
        local_model("checkpoint", True),
        path=lambda where: where / "checkpoint" / "config.json",
    ),
    bad(
        "local-model-folder-missing",
        "model.path",
        local_model("no_checkpoint", False),
        path=lambda where: where / "no_checkpoint",
    ),
    bad("local-model-without-path", "model.path", setting("model", {"source": "local"})),
    bad("hub-model-without-path", "model.path", setting("model", {"source": "hub"})),
    bad("model-n-params-negative", "model.n_params", setting("model.n_params", -5.0)),
    bad("model-n-params-nan", "model.n_params", setting("model.n_params", math.nan)),
    bad("model-trust-remote-code-string", "model.trust_remote_code", setting("model.trust_remote_code", "yes")),
    # ---- variants: registry losses --------------------------------------------------------------------
    bad("variants-empty", "variants", setting("variants", {})),
    bad("variant-name-with-dash", "variants.my-dpo", setting("variants.my-dpo", {"loss": "dpo"})),
    bad("variant-unknown-loss", "variants.dpo.loss", setting("variants.dpo", {"loss": "dpoo"})),
    bad("variant-loss-and-rule", "variants.dpo", setting("variants.dpo", {"loss": "dpo", "rule": "kto"})),
    bad("variant-neither-loss-nor-rule", "variants.dpo", setting("variants.dpo", {"betas": [0.1]})),
    bad("variant-not-a-mapping", "variants.dpo", setting("variants.dpo", "dpo")),
    bad(
        "cdpo-label-smoothing-out-of-range",
        "variants.cdpo.label_smoothing",
        setting("variants.cdpo.label_smoothing", 0.7),
    ),
    bad(
        "cdpo-label-smoothing-nan", "variants.cdpo.label_smoothing", setting("variants.cdpo.label_smoothing", math.nan)
    ),
    bad("rdpo-alpha-string", "variants.rdpo.alpha", setting("variants.rdpo.alpha", "high")),
    bad("simpo-gamma-negative", "variants.simpo.gamma", setting("variants.simpo.gamma", -1.0)),
    bad("loss-unknown-parameter", "variants.dpo.label_smoothing", setting("variants.dpo.label_smoothing", 0.1)),
    bad("loss-starts-from-base", "variants.dpo.starts_from", setting("variants.dpo.starts_from", "base")),
    bad("variant-betas-collide", "variants.dpo.betas", setting("variants.dpo.betas", [0.1, 0.1000001])),
    bad("variant-betas-negative", "variants.dpo.betas.0", setting("variants.dpo.betas", [-1.0])),
    bad("variant-betas-inf", "variants.dpo.betas.0", setting("variants.dpo.betas", [math.inf])),
    # ---- variants: rule variants (kto, orpo) ----------------------------------------------------------
    bad("kto-desirable-weight-zero", "variants.kto.desirable_weight", setting("variants.kto.desirable_weight", 0)),
    bad(
        "kto-undesirable-weight-nan",
        "variants.kto.undesirable_weight",
        setting("variants.kto.undesirable_weight", math.nan),
    ),
    bad("kto-examples-per-pair", "variants.kto.examples_per_pair", setting("variants.kto.examples_per_pair", "three")),
    bad("kto-unknown-parameter", "variants.kto.beta", setting("variants.kto.beta", 0.1)),
    bad("kto-unpair-seed-1.0", "variants.kto.unpair_seed", setting("variants.kto.unpair_seed", 1.0)),
    bad("kto-unpaired-split-empty", "variants.kto.unpaired_split", setting("variants.kto.unpaired_split", "")),
    bad("kto-unpaired-data-number", "variants.kto.unpaired_data", setting("variants.kto.unpaired_data", 5)),
    bad("kto-train-max-steps-zero", "variants.kto.train.max_steps", setting("variants.kto.train", {"max_steps": 0})),
    bad(
        "kto-train-learning-rate-inf",
        "variants.kto.train.learning_rate",
        setting("variants.kto.train", {"learning_rate": math.inf}),
    ),
    bad("kto-train-unknown-key", "variants.kto.train.max_stepz", setting("variants.kto.train", {"max_stepz": 3})),
    bad("kto-train-not-a-mapping", "variants.kto.train", setting("variants.kto.train", 5)),
    bad(
        "orpo-train-batch-size-1.0",
        "variants.orpo.train.batch_size",
        setting("variants.orpo.train", {"batch_size": 1.0}),
    ),
    bad("orpo-starts-from-unknown", "variants.orpo.starts_from", setting("variants.orpo.starts_from", "scratch")),
    bad("rule-variant-named-dpo", "variants.orpo.rule", setting("variants.orpo.rule", "dpo")),
    bad(
        "rule-variant-without-rule-file",
        "variants.orpo.rule",
        setting("variants.orpo.rule", "orpo2"),
        path=lambda _where: "workflow/rules/variants/orpo2.smk",
    ),
    # ---- variants: KTO's unpaired_data files ------------------------------------------------------------
    bad(
        "unpaired-parquet-missing",
        "variants.kto.unpaired_data",
        unpaired("missing.parquet"),
        path=unpaired_path("missing.parquet"),
    ),
    bad(
        "unpaired-jsonl-missing",
        "variants.kto.unpaired_data",
        unpaired("missing.jsonl"),
        path=unpaired_path("missing.jsonl"),
    ),
    bad(
        "unpaired-csv-missing", "variants.kto.unpaired_data", unpaired("missing.csv"), path=unpaired_path("missing.csv")
    ),
    bad(
        "unpaired-csv-unreadable",
        "variants.kto.unpaired_data",
        unpaired("locked.csv", rows=GOOD_ROWS, mode=LOCKED),
        path=unpaired_path("locked.csv"),
        unless_root=True,
    ),
    bad(
        "unpaired-parquet-unreadable",
        "variants.kto.unpaired_data",
        unpaired("locked.parquet", rows=GOOD_ROWS, mode=LOCKED),
        path=unpaired_path("locked.parquet"),
        unless_root=True,
    ),
    bad(
        "unpaired-parquet-is-a-folder",
        "variants.kto.unpaired_data",
        unpaired("folder.parquet", folder=True),
        path=unpaired_path("folder.parquet"),
    ),
    bad(
        "unpaired-parquet-garbage",
        "variants.kto.unpaired_data",
        unpaired("garbage.parquet", raw=GARBAGE),
        path=unpaired_path("garbage.parquet"),
    ),
    bad(
        "unpaired-jsonl-garbage",
        "variants.kto.unpaired_data",
        unpaired("garbage.jsonl", raw=GARBAGE),
        path=unpaired_path("garbage.jsonl"),
    ),
    bad(
        "unpaired-csv-garbage",
        "variants.kto.unpaired_data",
        unpaired("garbage.csv", raw=GARBAGE),
        path=unpaired_path("garbage.csv"),
    ),
    bad(
        "unpaired-csv-empty",
        "variants.kto.unpaired_data",
        unpaired("empty.csv", raw=b""),
        path=unpaired_path("empty.csv"),
    ),
    bad(
        "unpaired-jsonl-not-records",
        "variants.kto.unpaired_data",
        unpaired("list.jsonl", raw=b"[1, 2]\n[3, 4]\n"),
        path=unpaired_path("list.jsonl"),
    ),
    bad(
        "unpaired-parquet-no-label",
        "variants.kto.unpaired_data",
        unpaired("nolabel.parquet", rows=without("label")),
        path=unpaired_path("nolabel.parquet"),
    ),
    bad(
        "unpaired-jsonl-no-completion",
        "variants.kto.unpaired_data",
        unpaired("nocompletion.jsonl", rows=without("completion")),
        path=unpaired_path("nocompletion.jsonl"),
    ),
    bad(
        "unpaired-csv-no-prompt",
        "variants.kto.unpaired_data",
        unpaired("noprompt.csv", rows=without("prompt")),
        path=unpaired_path("noprompt.csv"),
    ),
    bad(
        "unpaired-csv-labels-yes",
        "variants.kto.unpaired_data",
        unpaired("yes.csv", rows=labelled("yes", "no")),
        path=unpaired_path("yes.csv"),
    ),
    bad(
        "unpaired-jsonl-labels-yes",
        "variants.kto.unpaired_data",
        unpaired("yes.jsonl", rows=labelled("yes", "no")),
        path=unpaired_path("yes.jsonl"),
    ),
    bad(
        "unpaired-parquet-labels-2",
        "variants.kto.unpaired_data",
        unpaired("two.parquet", rows=labelled(1, 2)),
        path=unpaired_path("two.parquet"),
    ),
    bad(
        "unpaired-jsonl-only-desirable",
        "variants.kto.unpaired_data",
        unpaired("alltrue.jsonl", rows=labelled(True, True)),
        path=unpaired_path("alltrue.jsonl"),
    ),
    bad(
        "unpaired-parquet-only-undesirable",
        "variants.kto.unpaired_data",
        unpaired("allfalse.parquet", rows=labelled(False, False)),
        path=unpaired_path("allfalse.parquet"),
    ),
    bad(
        "unpaired-csv-header-only",
        "variants.kto.unpaired_data",
        unpaired("header.csv", raw=b"prompt,completion,label\n"),
        path=unpaired_path("header.csv"),
    ),
    bad(
        "unpaired-json-not-jsonl",
        "variants.kto.unpaired_data",
        unpaired("records.json", rows=GOOD_ROWS),
        path=lambda where: where / "records.json",
    ),
    bad(
        "unpaired-tsv-missing",
        "variants.kto.unpaired_data",
        unpaired("missing.tsv"),
        path=lambda where: where / "missing.tsv",
    ),
    bad(
        "unpaired-absolute-path-without-suffix",
        "variants.kto.unpaired_data",
        unpaired("no_such_dataset"),
        path=lambda where: where / "no_such_dataset",
    ),
    bad(
        "unpaired-parquet-prompt-not-text",
        "variants.kto.unpaired_data",
        unpaired("numbers.parquet", rows=[dict(row, prompt=i) for i, row in enumerate(GOOD_ROWS)]),
        path=unpaired_path("numbers.parquet"),
    ),
    # ---- grid ------------------------------------------------------------------------------------------
    bad("grid-betas-collide", "grid.betas", setting("grid.betas", [0.1, 0.1000001])),
    bad("grid-beta-nan", "grid.betas.0", setting("grid.betas", [math.nan])),
    bad("grid-beta-inf", "grid.betas.0", setting("grid.betas", [math.inf])),
    bad("grid-beta-zero", "grid.betas.1", setting("grid.betas", [0.1, 0.0])),
    bad("grid-betas-empty", "grid.betas", setting("grid.betas", [])),
    bad("grid-betas-missing", "grid.betas", deleting("grid.betas")),
    bad("grid-beta-string", "grid.betas.0", setting("grid.betas", ["0.1"])),
    bad("grid-seed-1.0", "grid.seeds.0", setting("grid.seeds", [1.0])),
    bad("grid-seeds-repeated", "grid.seeds", setting("grid.seeds", [0, 0])),
    bad("grid-seed-negative", "grid.seeds.0", setting("grid.seeds", [-1])),
    bad("grid-unknown-variant", "grid.variants.1", setting("grid.variants", ["dpo", "kto2"])),
    bad("grid-variants-repeated", "grid.variants", setting("grid.variants", ["dpo", "dpo"])),
    bad("grid-unknown-key", "grid.beta", setting("grid.beta", [0.1])),
    # ---- data ------------------------------------------------------------------------------------------
    bad("data-n-test-prompts-100000", "data.n_test_prompts", setting("data.n_test_prompts", 100000)),
    bad("data-n-train-prompts-100000", "data.n_train_prompts", setting("data.n_train_prompts", 100000)),
    bad("data-n-train-prompts-zero", "data.n_train_prompts", setting("data.n_train_prompts", 0)),
    bad("data-prompt-min-over-max", "data.prompt_min_tokens", setting("data.prompt_min_tokens", 10)),
    bad("data-eval-fraction-nan", "data.eval_fraction", setting("data.eval_fraction", math.nan)),
    bad("data-test-fraction-half", "data.test_fraction", setting("data.test_fraction", 0.5)),
    bad(
        "data-n-train-prompts-over-the-split",
        "data.n_train_prompts",  # fits the data, not what the fractions leave
        setting("data.n_train_prompts", 20000),
        setting("data.eval_fraction", 0.4),
        setting("data.test_fraction", 0.4),
    ),
    bad("data-eval-split-empty", "data.eval_fraction", setting("data.eval_fraction", 1.0e-6)),
    bad("data-source-unknown", "data.source", setting("data.source", "imdb_hub")),
    bad("data-seed-1.0", "data.seed", setting("data.seed", 1.0)),
    # ---- judge (the gold classifier) -----------------------------------------------------------------------
    bad("judge-max-features-10", "judge.max_features", setting("judge.max_features", 10)),
    bad("judge-ngram-max-4", "judge.ngram_max", setting("judge.ngram_max", 4)),
    bad("judge-C-nan", "judge.C", setting("judge.C", math.nan)),
    # ---- sft ---------------------------------------------------------------------------------------------
    bad("sft-learning-rate-nan", "sft.learning_rate", setting("sft.learning_rate", math.nan)),
    bad("sft-max-steps-2.5", "sft.max_steps", setting("sft.max_steps", 2.5)),
    bad("sft-seed-1.0", "sft.seed", setting("sft.seed", 1.0)),
    # ---- pairs -------------------------------------------------------------------------------------------
    bad("pairs-one-completion", "pairs.completions_per_prompt", setting("pairs.completions_per_prompt", 1)),
    bad("pairs-temperature-nan", "pairs.temperature", setting("pairs.temperature", math.nan)),
    bad("pairs-top-p-1.5", "pairs.top_p", setting("pairs.top_p", 1.5)),
    bad("pairs-length-bias-negative", "pairs.length_bias", setting("pairs.length_bias", -0.1)),
    # ---- dpo ---------------------------------------------------------------------------------------------
    bad("dpo-learning-rate-nan", "dpo.learning_rate", setting("dpo.learning_rate", math.nan)),
    bad("dpo-learning-rate-inf", "dpo.learning_rate", setting("dpo.learning_rate", math.inf)),
    bad("dpo-learning-rate-zero", "dpo.learning_rate", setting("dpo.learning_rate", 0.0)),
    Case(
        "dpo-learning-rate-1e-4-is-a-string-in-yaml",
        "dpo.learning_rate",  # YAML 1.1 reads 1e-4 as a string
        text=smoke_replaced("lr_string", "learning_rate: 1.0e-4", "learning_rate: 1e-4"),
    ),
    bad("dpo-max-steps-2.0", "dpo.max_steps", setting("dpo.max_steps", 2.0)),
    bad("dpo-unknown-key", "dpo.max_stepz", setting("dpo.max_stepz", 3)),
    bad("dpo-not-a-mapping", "dpo", setting("dpo", 5)),
    # ---- generation --------------------------------------------------------------------------------------
    bad("temperature-nan", "generation.temperatures.1", setting("generation.temperatures", [0.0, math.nan])),
    bad("temperature-inf", "generation.temperatures.0", setting("generation.temperatures", [math.inf])),
    bad("temperatures-collide", "generation.temperatures", setting("generation.temperatures", [1.0, 1.0000001])),
    bad("temperature-negative", "generation.temperatures.0", setting("generation.temperatures", [-1.0])),
    bad("generation-engine-unknown", "generation.engine", setting("generation.engine", "tgi")),
    bad("generation-top-p-zero", "generation.top_p", setting("generation.top_p", 0.0)),
    bad(
        "generation-adapters-per-engine-zero",
        "generation.adapters_per_engine",
        setting("generation.adapters_per_engine", 0),
    ),
    # ---- precision, LoRA, processes: what the device cannot run -----------------------------------------
    bad("training-fp16-on-cpu", "training.precision", setting("training.precision", "fp16")),
    bad("training-precision-unknown", "training.precision", setting("training.precision", "fp8")),
    bad("training-bf16-master-weights", "training.torch_dtype", setting("training.torch_dtype", "bfloat16")),
    bad(
        "training-checkpointing-yes",
        "training.gradient_checkpointing",
        setting("training.gradient_checkpointing", "yes"),
    ),
    bad("peft-rank-zero", "peft.r", setting("peft", {"r": 0})),
    bad("peft-no-target-modules", "peft.target_modules", setting("peft", {"target_modules": []})),
    bad("peft-dropout-one", "peft.lora_dropout", setting("peft", {"lora_dropout": 1.0})),
    bad("peft-qlora-on-cpu", "peft.load_in_4bit", setting("peft", {"load_in_4bit": True})),
    bad("peft-sft-unknown", "peft.sft", setting("peft", {"sft": "half"})),
    bad("distributed-strategy-unknown", "distributed.strategy", setting("distributed.strategy", "horovod")),
    bad("distributed-processes-without-strategy", "distributed.strategy", setting("distributed.gpus_per_job", 2)),
    bad("distributed-zero3-on-cpu", "distributed.strategy", setting("distributed", {"strategy": "deepspeed_zero3"})),
    bad("distributed-nodes-on-cpu", "distributed.nodes", setting("distributed", {"strategy": "ddp", "nodes": 2})),
    bad(
        "distributed-tensor-parallel-on-cpu",
        "distributed.tensor_parallel_size",
        setting("distributed.tensor_parallel_size", 2),
    ),
    bad(
        "distributed-batch-does-not-split",
        "dpo.batch_size",
        setting("distributed", {"strategy": "ddp", "gpus_per_job": 3}),
    ),
    # ---- judges ------------------------------------------------------------------------------------------
    bad("judges-empty", "judges", setting("judges", {})),
    bad("judges-only-pairwise", "judges", setting("judges", {"llm": SMOKE["judges"]["llm"]})),
    bad("judge-kind-unknown", "judges.gold.kind", setting("judges.gold.kind", "oracle")),
    bad("judge-name-with-dash", "judges.my-judge", setting("judges.my-judge", {"kind": "vader"})),
    bad("judge-unknown-key", "judges.vader.model", setting("judges.vader.model", "x")),
    bad("judge-seed-1.0", "judges.gold.seed", setting("judges.gold.seed", 1.0)),
    bad(
        "llm-template-stray-brace",
        "judges.llm.template",
        setting("judges.llm.template", "Review: {prompt}\nA: {first}\nB: {second}\nBetter {A or B}? {"),
    ),
    bad(
        "llm-template-missing-field",
        "judges.llm.template",
        setting("judges.llm.template", "Which is better, {first} or the other one, for {prompt}?"),
    ),
    bad(
        "llm-template-unknown-field",
        "judges.llm.template",
        setting("judges.llm.template", "{prompt} {first} {second} {third}"),
    ),
    bad("llm-label-empty", "judges.llm.labels.first", setting("judges.llm.labels", {"first": " "})),
    bad("llm-labels-equal", "judges.llm.labels", setting("judges.llm.labels", {"first": "A", "second": "A"})),
    bad("llm-labels-unknown-key", "judges.llm.labels.both", setting("judges.llm.labels", {"both": "3"})),
    bad("llm-max-length-8", "judges.llm.max_length", setting("judges.llm.max_length", 8)),
    bad(
        "reward-model-folder-missing",
        "judges.rm.path",
        reward_judge(lambda where: where / "no_rm"),
        path=lambda where: where / "no_rm",
    ),
    bad(
        "reward-model-without-config-json",
        "judges.rm.path",
        reward_judge(empty_folder("rm")),
        path=lambda where: where / "rm" / "config.json",
    ),
    bad("reward-model-without-path", "judges.rm.path", reward_judge(None)),
    bad("reward-model-from-base", "judges.rm.source", reward_judge(None, source="base")),
    bad("reward-model-hub-id-invalid", "judges.rm.path", reward_judge(None, source="hub", path="-bad-/id")),
    bad(
        "llm-judge-local-folder-missing",
        "judges.llm.path",
        setting("judges.llm", {"kind": "llm_pairwise", "source": "local", "path": "/nonexistent/dpolab/judge"}),
        path=lambda _where: "/nonexistent/dpolab/judge",
    ),
    bad("reward-model-label-negative", "judges.rm.label", reward_judge(None, source="hub", path="a/b", label=-1)),
    # ---- evaluation --------------------------------------------------------------------------------------
    bad("primary-judge-unknown", "evaluation.primary_judge", setting("evaluation.primary_judge", "oracle")),
    bad("confidence-level-1", "evaluation.confidence_level", setting("evaluation.confidence_level", 1.0)),
    bad("bootstrap-resamples-10", "evaluation.bootstrap_resamples", setting("evaluation.bootstrap_resamples", 10)),
    bad("lc-l2-nan", "evaluation.lc_l2", setting("evaluation.lc_l2", math.nan)),
    bad("evaluation-seed-1.0", "evaluation.seed", setting("evaluation.seed", 1.0)),
    # ---- preference studies: data, SFT, the reward model, judges -------------------------------------------
    bad("pref-path-required", "data.path", preference_study(), deleting("data.path")),
    bad(
        "pref-file-missing",
        "data.path",
        preference_study(),
        lambda c, w: c["data"].update(path=str(w / "nope.jsonl")),
        path=lambda where: where / "nope.jsonl",
    ),
    bad(
        "pref-file-not-json",
        "data.path",
        preference_study(),
        preference_file("prefs.jsonl", "prompt,chosen\nnot json\n"),
        path=lambda where: where / "prefs.jsonl",
    ),
    bad(
        "pref-file-empty",
        "data.path",
        preference_study(),
        preference_file("prefs.jsonl", "\n"),
        path=lambda where: where / "prefs.jsonl",
    ),
    bad(
        "pref-columns-missing",
        "data.columns",
        preference_study(columns={"chosen": "good"}),
        path=lambda _where: EXAMPLE_PREFERENCES,
    ),
    bad("pref-prompt-column-missing", "data.columns.prompt", preference_study(columns={"prompt": "question"})),
    bad("pref-columns-unknown-key", "data.columns.answer", preference_study(columns={"answer": "a"})),
    bad("pref-hub-id-invalid", "data.path", preference_study(path="not a hub id!!")),
    bad("pref-test-split-of-one-file", "data.test_split", preference_study(test_split="test")),
    bad(
        "pref-save-to-disk-without-the-split",
        "data.path",
        preference_study(train_split="training"),
        save_to_disk_folder(["train", "test"]),
    ),
    bad(
        "pref-save-to-disk-test-split-unknown",
        "data.test_split",
        preference_study(test_split="validation"),
        save_to_disk_folder(["train", "test"]),
    ),
    bad("pref-imdb-key", "data.n_train_prompts", preference_study(n_train_prompts=64)),
    bad("pref-n-train-zero", "data.n_train", preference_study(n_train=0)),
    bad("pref-reward-fraction-1", "data.reward_fraction", preference_study(reward_fraction=1.0)),
    bad("pref-imdb-key-on-imdb", "data.n_train", setting("data.n_train", 10)),
    bad("pref-conversational-without-chat-template", "model", preference_study(), model_without_chat_template),
    bad("pref-gold-judge", "judges.gold.kind", preference_study(), setting("judges.gold", {"kind": "gold"})),
    bad("pref-pairs-section", "pairs", preference_study(), setting("pairs", {"completions_per_prompt": 3})),
    bad("pref-sft-dataset-without-path", "sft.dataset.path", preference_study(), setting("sft.data", "dataset")),
    bad(
        "pref-sft-dataset-missing-file",
        "sft.dataset.path",
        preference_study(),
        setting("sft.data", "dataset"),
        setting("sft.dataset", {"path": "/nonexistent/dpolab/sft.jsonl"}),
        path=lambda _where: "/nonexistent/dpolab/sft.jsonl",
    ),
    bad("pref-sft-dataset-unused", "sft.dataset", preference_study(), setting("sft.dataset", {"path": "sft.jsonl"})),
    bad("pref-sft-data-unknown", "sft.data", preference_study(), setting("sft.data", "rejected")),
    bad("pref-sft-data-on-imdb", "sft.data", setting("sft.data", "chosen")),
    bad("reward-model-section-on-imdb", "reward_model", setting("reward_model", {"max_steps": 3})),
    bad(
        "reward-model-max-steps-zero",
        "reward_model.max_steps",
        preference_study(),
        setting("reward_model", {"max_steps": 0}),
    ),
    bad("reward-model-trained-on-imdb", "judges.rm.source", reward_judge(None, source="study")),
    bad(
        "reward-model-trained-with-a-path",
        "judges.rm.path",
        preference_study(),
        setting("judges.rm", {"kind": "reward_model", "source": "study", "path": "x"}),
    ),
    bad("http-judge-without-base-url", "judges.llm.base_url", http_judge(model="m")),
    bad("http-judge-without-model", "judges.llm.model", http_judge(base_url="http://127.0.0.1:8000/v1")),
    bad("http-judge-base-url-ftp", "judges.llm.base_url", http_judge(base_url="ftp://host/v1", model="m")),
    bad(
        "http-judge-credentials-in-url",
        "judges.llm.base_url",
        http_judge(base_url="http://me:secret@host:8000/v1", model="m"),
    ),
    bad(
        "http-judge-down",
        "judges.llm.base_url",
        lambda c, w: http_judge(base_url=f"http://127.0.0.1:{free_port()}/v1", model="m")(c, w),
    ),
    bad(
        "http-judge-api-key-env-unset",
        "judges.llm.api_key_env",
        http_judge(base_url="http://127.0.0.1:8000/v1", model="m", api_key_env="DPOLAB_NO_SUCH_KEY"),
    ),
    bad(
        "http-judge-concurrency-zero",
        "judges.llm.max_concurrency",
        http_judge(base_url="http://h/v1", model="m", max_concurrency=0),
    ),
    # ---- mlflow ------------------------------------------------------------------------------------------
    bad("tracking-uri-not-a-uri", "mlflow.tracking_uri", setting("mlflow.tracking_uri", "not a uri")),
    bad("tracking-uri-ftp", "mlflow.tracking_uri", setting("mlflow.tracking_uri", "ftp://x")),
    bad("tracking-uri-file", "mlflow.tracking_uri", setting("mlflow.tracking_uri", "file:///tmp/mlruns")),
    bad("tracking-uri-bare-http", "mlflow.tracking_uri", setting("mlflow.tracking_uri", "http://")),
    bad(
        "tracking-uri-port-not-a-number", "mlflow.tracking_uri", setting("mlflow.tracking_uri", "http://localhost:port")
    ),
    bad(
        "tracking-uri-with-credentials",
        "mlflow.tracking_uri",
        setting("mlflow.tracking_uri", "http://user:secret@localhost:5000"),
    ),
    bad("tracking-server-not-listening", "mlflow.tracking_uri", http_not_listening),
    bad("tracking-server-is-not-mlflow-404", "mlflow.tracking_uri", http_not_mlflow("/")),
    bad("tracking-server-is-not-mlflow-html", "mlflow.tracking_uri", http_not_mlflow("/html")),
    bad(
        "sqlite-under-a-regular-file",
        "mlflow.tracking_uri",
        sqlite_under_a_file,
        path=lambda where: where / "plain_file",
    ),
    bad(
        "sqlite-store-is-a-folder",
        "mlflow.tracking_uri",
        sqlite_store_is_a_folder,
        path=lambda where: where / "mlflow.db",
    ),
    bad(
        "sqlite-under-read-only-folder",
        "mlflow.tracking_uri",
        sqlite_under_read_only_folder,
        path=lambda where: where / "locked",
        unless_root=True,
    ),
    bad("mlflow-log-models-string", "mlflow.log_models", setting("mlflow.log_models", "yes")),
    bad("mlflow-unknown-key", "mlflow.uri", setting("mlflow.uri", "sqlite:///x.db")),
    # ---- the config file itself --------------------------------------------------------------------------
    bad("unknown-top-level-key", "dpo_settings", setting("dpo_settings", {"max_steps": 3})),
    Case("duplicate-top-level-section", "dpo", text=smoke_with("dup_top", "evaluation:", "dpo:\n  max_steps: 9")),
    Case(
        "duplicate-variant-under-variants",
        "variants.dpo",
        text=smoke_with("dup_variant", "  simpo:", "  dpo:   {loss: ipo}"),
    ),
    Case("duplicate-nested-key", "dpo.max_steps", text=smoke_with("dup_nested", "  max_steps: 2", "  max_steps: 3")),
    Case(
        "duplicate-key-in-second-configfile",
        "dpo",
        text=smoke_with("dup_second", "study:", ""),
        extra_configfile=lambda _where: "dpo:\n  max_steps: 3\ndpo:\n  max_steps: 4\n",
    ),
    bad("quoted-number-in-the-file", "dpo.max_steps", setting("dpo.max_steps", "2")),  # only --config strings are typed
    # Snakemake reads every --configfile itself (snakemake.settings.types.ConfigSettings), before the Snakefile and
    # dpolab run: these messages are its own
    Case(
        "yaml-syntax-error",
        CONFIG_FILE,
        text=smoke_with("yaml_syntax", "  max_steps: 2", "  batch_size: [4, 8\n"),
        snakemake_message="Config file is not valid JSON or YAML",
        known_hole=SNAKEMAKE_READS_CONFIGFILES,
    ),
    Case(
        "yaml-not-a-mapping",
        CONFIG_FILE,
        text=lambda _where: "- study: smoke\n- grid: {}\n",
        snakemake_message="Config file must be given as JSON or YAML with keys at top level",
        known_hole=SNAKEMAKE_READS_CONFIGFILES,
    ),
    Case(
        "config-file-missing",
        CONFIG_FILE,
        text=lambda _where: SMOKE_TEXT,
        extra_configfile=lambda where: where / "no_such_override.yaml",
        path=lambda where: where / "no_such_override.yaml",
        known_hole="Snakemake 9.27.1 opens a --configfile outside its `except FileNotFoundError` "
        "(snakemake/common/configfile.py) and prints the FileNotFoundError's traceback",
    ),
    # ---- --config overrides (strings typed by the schema, then checked) ----------------------------------
    bad("override-max-steps-negative", "dpo.max_steps", config=["dpo={max_steps: -3}"]),
    bad("override-max-steps-2.5", "dpo.max_steps", config=["dpo={max_steps: 2.5}"]),
    bad("override-learning-rate-nan", "dpo.learning_rate", config=["dpo={learning_rate: .nan}"]),
    bad("override-betas-collide", "grid.betas", config=["grid={betas: [0.1, 0.1000001]}"]),
    bad("override-seeds-1.0", "grid.seeds.0", config=["grid={seeds: [1.0]}"]),
    bad("override-study-slash", "study", config=["study=a/b"]),
    bad("override-tracking-uri-ftp", "mlflow.tracking_uri", config=["mlflow={tracking_uri: 'ftp://x'}"]),
    bad("override-n-test-prompts", "data.n_test_prompts", config=["data={n_test_prompts: 100000}"]),
    bad(
        "override-label-smoothing", "variants.cdpo.label_smoothing", config=["variants={cdpo: {label_smoothing: 0.7}}"]
    ),
    bad(
        "override-temperatures-collide",
        "generation.temperatures",
        config=["generation={temperatures: [1.0, 1.0000001]}"],
    ),
    bad("override-unknown-key", "dpo.max_stepz", config=["dpo={max_stepz: 5}"]),
    bad("override-section-not-a-mapping", "dpo", config=["dpo=5"]),
    bad("override-broken-yaml", "dpo", config=["dpo={max_steps: 5"]),
    bad("override-kto-weight", "variants.kto.desirable_weight", config=["variants={kto: {desirable_weight: -1}}"]),
]


def study_name(case_id: str) -> str:
    return "bad_" + re.sub(r"[^A-Za-z0-9_]", "_", case_id)


def write_case(case: Case, work: Path) -> tuple[list[str], Path, Path]:
    """The case's files under cases/<id>/: (snakemake arguments, that folder, its config file)."""
    where = work / "cases" / case.id
    where.mkdir(parents=True)
    config_file = where / "config.yaml"
    if case.text is not None:
        config_file.write_text(case.text(where))
    else:
        config = yaml.safe_load(SMOKE_TEXT)
        config["study"] = study_name(case.id)
        if case.edit is not None:
            case.edit(config, where)
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    args = ["--configfile", str(config_file)]
    if case.extra_configfile is not None:
        extra = case.extra_configfile(where)
        if not isinstance(extra, Path):
            (where / "override.yaml").write_text(extra)
            extra = where / "override.yaml"
        args.append(str(extra))
    if case.config:
        args += ["--config", *case.config]
    return args, where, config_file


def refusal_problems(case: Case, status: int, output: str, where: Path, config_file: Path, work: Path) -> list[str]:
    """What is wrong with how the dry run refused the case (nothing: refused as it should be)."""
    problems = []
    if status == 0:
        problems.append("the dry run accepted it")
    if TRACEBACK in output:
        problems.append("a Python traceback was printed")
    if DPOLAB_FRAME.search(output):
        problems.append("an exception escaped the config checks (a dpolab frame was printed)")
    if case.snakemake_message is not None and case.snakemake_message not in output:
        problems.append(f"Snakemake's message {case.snakemake_message!r} is missing")
    if case.key == CONFIG_FILE:
        if str(config_file) not in output and case.path is None:
            problems.append(f"the message does not name the config file {config_file}")
    elif f"invalid config: {case.key}:" not in output:
        problems.append(f"no message 'invalid config: {case.key}: ...'")
    if case.path is not None and str(case.path(where)) not in output:
        problems.append(f"the message does not name the file {case.path(where)}")
    if (work / "results").exists():
        problems.append(f"results/ was created: {sorted(str(p) for p in (work / 'results').rglob('*'))[:10]}")
    if (ROOT / "results" / study_name(case.id)).exists():
        problems.append(f"the project's results/{study_name(case.id)} was created")
    return problems


def assert_refused(case: Case, status: int, output: str, where: Path, config_file: Path, work: Path) -> None:
    problems = refusal_problems(case, status, output, where, config_file, work)
    if problems and case.known_hole:  # Snakemake's own, before the workflow starts: see Case.known_hole
        assert status != 0 and not (work / "results").exists(), "\n".join(problems) + "\n" + output[-3000:]
        pytest.xfail(f"{case.known_hole}: {'; '.join(problems)}")
    assert not problems, "\n".join(problems) + "\n---\n" + output[-4000:]


def permissions_apply() -> bool:
    """Whether this process is refused a file with mode 000 (not so for root with its usual
    capabilities; so for root under `setpriv --bounding-set -dac_override,-dac_read_search`)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        probe = Path(folder) / "probe"
        probe.write_text("x")
        probe.chmod(0o000)
        try:
            probe.read_text()
        except PermissionError:
            return True
        finally:
            probe.chmod(0o600)
    return False


def _params(cases: list[Case]):
    enforced = permissions_apply()
    return [
        pytest.param(
            case,
            id=case.id,
            marks=pytest.mark.skipif(
                case.unless_root and not enforced,
                reason="this process (root) reads and writes whatever the permissions say",
            ),
        )
        for case in cases
    ]


@pytest.mark.parametrize("case", _params(CASES))
def test_bad_input_is_refused_naming_the_key(case, work):
    args, where, config_file = write_case(case, work)
    try:
        status, output = dry_run(work, args)
    finally:
        for path in where.rglob("*"):  # a locked file or folder must not outlive the test
            if not path.is_symlink():
                path.chmod(0o755 if path.is_dir() else 0o644)
    assert_refused(case, status, output, where, config_file, work)


def test_the_battery_covers_every_section_of_the_schema():
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    covered = {case.key.split(".")[0] for case in CASES if case.key != CONFIG_FILE}
    assert set(schema["properties"]) <= covered, set(schema["properties"]) - covered
    assert len(CASES) >= 70 and len({case.id for case in CASES}) == len(CASES)


# ---- the same through the real command line ------------------------------------------------------
CLI_CASES = [
    "dpo-learning-rate-nan",
    "unpaired-csv-labels-yes",
    "override-max-steps-negative",
    "duplicate-variant-under-variants",
]


def test_cli_subprocess_agrees(tmp_path):
    """A few cases as real `snakemake` processes, side by side: the same message, no
    traceback, nothing created (the in-process runs print what the command line prints)."""
    work = copy_workflow(tmp_path / "work")
    snakemake = str(Path(sys.executable).parent / "snakemake")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    runs = []
    for case in (next(c for c in CASES if c.id == name) for name in CLI_CASES):
        args, where, config_file = write_case(case, work)
        process = subprocess.Popen(
            [snakemake, "--dry-run", *args],
            cwd=work,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        runs.append((case, process, where, config_file))
    for case, process, where, config_file in runs:
        output, _ = process.communicate(timeout=120)
        assert_refused(case, process.returncode, output, where, config_file, work)


# ---- good inputs: overrides merge into the config file ------------------------------------------
@pytest.fixture(scope="session")
def good_work(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("good-inputs") / "work")


def _resolved_smoke(overrides: dict | None = None) -> dict:
    """smoke.yaml resolved by load_study, with `overrides` merged in as Snakemake merges --config."""
    from dpolab.config import load_study, merge

    config = yaml.safe_load(SMOKE_TEXT)
    if overrides:
        merge(config, overrides)
    return load_study(config, overrides=overrides, check_environment=False).to_dict()


def test_config_override_is_typed_and_merged_into_its_section(good_work):
    from snakemake.cli import parse_config

    argument = "dpo={max_steps: 5}"
    overrides = parse_config([argument])
    assert overrides == {"dpo": {"max_steps": "5"}}  # what the command line hands the workflow: a string
    status, output, studies = dry_run(
        good_work, ["--configfile", "configs/smoke.yaml", "--config", argument], record_studies=True
    )
    assert status == 0, output[-3000:]
    assert TRACEBACK not in output and "results/smoke/dpo/variant~dpo/beta~0.1/seed~0" in output
    assert not (good_work / "results").exists()
    (study,) = studies  # the resolved config of the Study the workflow built
    dpo = study["dpo"]
    assert dpo["max_steps"] == 5 and type(dpo["max_steps"]) is int
    for key, value in SMOKE["dpo"].items():  # the rest of smoke.yaml's dpo: section survives
        if key != "max_steps":
            assert dpo[key] == value, key
    assert dict(study, dpo=None) == dict(_resolved_smoke(), dpo=None)  # and every other section
    # the same through load_study with the overrides, outside Snakemake
    resolved = _resolved_smoke(overrides)
    assert resolved["dpo"] == dict(_resolved_smoke()["dpo"], max_steps=5)
    assert type(resolved["dpo"]["max_steps"]) is int


def test_second_configfile_merges_into_nested_sections(good_work, tmp_path):
    override = tmp_path / "override.yaml"
    override.write_text("dpo:\n  learning_rate: 2.0e-4\nvariants:\n  cdpo: {label_smoothing: 0.2}\n")
    status, output, studies = dry_run(
        good_work, ["--configfile", "configs/smoke.yaml", str(override)], record_studies=True
    )
    assert status == 0, output[-3000:]
    assert TRACEBACK not in output and not (good_work / "results").exists()
    (resolved,) = studies
    plain = _resolved_smoke()
    assert resolved["dpo"] == dict(plain["dpo"], learning_rate=2.0e-4)
    assert resolved["variants"]["cdpo"] == dict(plain["variants"]["cdpo"], label_smoothing=0.2)
    assert resolved["variants"]["cdpo"]["loss"] == "cdpo"  # merged into the entry, not replacing it
    assert dict(resolved, dpo=None, variants=None) == dict(plain, dpo=None, variants=None)
