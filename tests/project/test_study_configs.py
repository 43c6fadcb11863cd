"""The real-task study configs (configs/studies/: the DPO paper's HH-RLHF dialogue and TL;DR
summarization tasks, Zephyr-style DPO on UltraFeedback) pass the config check and dry-run under
the SLURM profile, offline.

Offline: each config's GPT-4 judge (kind llm_http, https://api.openai.com/v1) is pointed at a
stand-in server on 127.0.0.1 (FakeModelList); its API key variable gets a dummy value; the
placeholder MLflow server is replaced by the default sqlite store; HF_HUB_CACHE is an empty folder
(nothing cached, nothing downloaded: model.n_params sizes the jobs)."""

import json
import os
import re
import subprocess
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from dpolab.config import ROOT, read_study
from helpers.workflow import copy_workflow

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
API_KEY_ENV, DUMMY_KEY = "OPENAI_API_KEY", "dummy-key-for-the-fake-server"
# the GPU configs' tracking server (mlflow.example.org) does not exist: the default sqlite store instead
NO_SERVER = "mlflow={tracking_uri: null}"


@dataclass(frozen=True)
class Expected:
    sft_source: str  # what SFT trains on
    sft_skipped: bool  # sft.data: none (no sft job)
    reward_model: bool  # a judge with kind reward_model, source study (a reward_model job)
    columns: dict  # data.columns as resolved
    conversational_columns: bool = False  # the prompt comes from chosen/rejected (column_map["prompt"] is None)


CONVERSATIONS = {"prompt": None, "chosen": "chosen", "rejected": "rejected"}
STUDIES = {
    "hh-rlhf-pythia-2.8b": Expected("chosen", False, True, CONVERSATIONS, conversational_columns=True),
    "ultrafeedback-zephyr": Expected("none", True, False, CONVERSATIONS, conversational_columns=True),
    "tldr-summarization": Expected(
        "dataset", False, True, {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}
    ),
}


class FakeModelList:
    """A stand-in for an OpenAI-compatible API on 127.0.0.1 that answers only GET /v1/models (the
    model listing the config check reads, dpolab.http_judge.check_endpoint), for the dry runs: no
    judge request is made before a job runs. Records each request's path and Authorization."""

    def __init__(self, models: list[str]):
        seen = self.seen = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                seen.append((self.path, self.headers.get("Authorization")))
                if self.path.rstrip("/") != "/v1/models":
                    self.send_error(404)
                    return
                body = json.dumps({"object": "list", "data": [{"id": m, "object": "model"} for m in models]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeModelList":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def config_file(name: str) -> Path:
    return ROOT / "configs" / "studies" / f"{name}.yaml"


def http_judges(name: str) -> dict:
    """name -> spec of the config's llm_http judges, as written."""
    judges = yaml.safe_load(config_file(name).read_text())["judges"]
    return {judge: spec for judge, spec in judges.items() if spec["kind"] == "llm_http"}


def judge_overrides(name: str, base_url: str) -> dict:
    """Only base_url of each HTTP judge: the rest of its entry (model, template, api_key_env) and
    the other judges stay as the file has them (Snakemake merges --config mappings key by key, and
    so does dpolab.config.merge for files)."""
    return {judge: {"base_url": base_url} for judge in http_judges(name)}


@pytest.fixture(scope="module")
def fake_api():
    models = sorted({spec["model"] for name in STUDIES for spec in http_judges(name).values()})
    with FakeModelList(models) as server:
        yield server


@pytest.fixture(scope="module")
def offline_env(tmp_path_factory):
    return dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        HF_HUB_CACHE=str(tmp_path_factory.mktemp("empty-hf-cache")),
        **{API_KEY_ENV: DUMMY_KEY},
    )


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("studies") / "wf")


def test_the_study_configs_judge_over_http():
    assert set(STUDIES) <= {p.stem for p in (ROOT / "configs" / "studies").glob("*.yaml")}
    for name in STUDIES:  # each needs the fake endpoint and the dummy key below
        assert http_judges(name) and all(spec.get("api_key_env") == API_KEY_ENV for spec in http_judges(name).values())


@pytest.mark.parametrize("name", list(STUDIES))
def test_config_check_passes_with_the_endpoint_faked(name, fake_api, offline_env, tmp_path, monkeypatch):
    overrides = {"judges": judge_overrides(name, fake_api.base_url), "mlflow": {"tracking_uri": None}}
    override_file = tmp_path / "offline.yaml"
    override_file.write_text(yaml.safe_dump(overrides))
    done = subprocess.run(
        [sys.executable, "-m", "dpolab.config", str(config_file(name)), str(override_file)],
        cwd=tmp_path,
        env=offline_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"config OK: study {name}," in done.stdout
    assert ("/v1/models", f"Bearer {DUMMY_KEY}") in fake_api.seen  # the check asked the fake server, with the key

    # the resolved study, checked against this machine as the Snakefile does
    monkeypatch.chdir(tmp_path)  # results/<study>/mlflow.db would be here (nothing is created)
    monkeypatch.setenv(API_KEY_ENV, DUMMY_KEY)
    monkeypatch.setenv("HF_HUB_CACHE", offline_env["HF_HUB_CACHE"])
    study = read_study(config_file(name), overrides)
    expected = STUDIES[name]
    assert study.name == name and study.device == "cuda" and study.preferences
    assert study.sft_source == expected.sft_source and study.sft_skipped == expected.sft_skipped
    assert study.trains_reward_model == expected.reward_model
    assert dict(study.data.columns) == expected.columns
    assert (study.data.column_map["prompt"] is None) == expected.conversational_columns
    assert study.config["model"]["n_params"] > 1e9  # a Hub model: sized before any download
    for judge, spec in http_judges(name).items():  # the override changed base_url alone
        resolved = study.config["judges"][judge]
        assert resolved["base_url"] == fake_api.base_url and resolved["model"] == spec["model"]
        assert resolved["template"] == spec.get("template")
    assert study.evaluation.primary_judge in study.pairwise_judges


def rule_counts(output: str) -> dict[str, int]:
    """rule -> jobs, from a dry run's job stats table."""
    counts = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


@pytest.mark.parametrize("name", list(STUDIES))
def test_dry_run_under_the_slurm_profile(name, work, fake_api, offline_env):
    judges = json.dumps(judge_overrides(name, fake_api.base_url))  # JSON is YAML: the URL stays one quoted string
    done = subprocess.run(
        [
            SNAKEMAKE,
            "-n",
            "--quiet",
            "rules",
            "--profile",
            "profiles/slurm",
            "--configfile",
            f"configs/studies/{name}.yaml",
            "--config",
            NO_SERVER,
            f"judges={judges}",
        ],
        cwd=work,
        env=offline_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    counts = rule_counts(done.stdout + done.stderr)
    study = read_study(work / "configs" / "studies" / f"{name}.yaml", check_environment=False)
    expected = STUDIES[name]
    # a preference study: its pairs come from the dataset, so no pairs stage and no IMDb gold judge
    assert "pairs" not in counts and "judge" not in counts, counts
    for rule in ("mlflow_study", "base_model", "data", "reference", "compare", "summary"):
        assert counts.get(rule) == 1, (rule, counts)
    assert counts.get("sft", 0) == (0 if expected.sft_skipped else 1), counts
    # the reward model judge survived the judges override (merged, not replaced)
    assert counts.get("reward_model", 0) == (1 if expected.reward_model else 0), counts
    assert counts["dpo"] == len(study.points) and {p.rule for p in study.points} == {"dpo"}
    # the grid and the SFT (or base) model; LoRA policies on the SFT model share engines
    shared = {rule: n for rule, n in counts.items() if rule.startswith("generate_adapters_")}
    assert counts["generate"] == len(study.policies) - sum(len(batch) for batch in study.adapter_batches)
    assert len(shared) == len(study.adapter_batches) and set(shared.values()) <= {1}
    assert counts["evaluate"] == len(study.policies)
    assert counts["pairwise_judge"] == len(study.pairwise_judges) == 1


def dry_run_jobs(output: str) -> list[str]:
    """The job blocks a dry run prints (Snakemake's own description, or a rule's message)."""
    return [
        block for block in output.split("\n\n") if "rule " in block and ("resources:" in block or "launch:" in block)
    ]


@pytest.mark.parametrize(
    "distributed, gpus, nodes, processes",
    [
        (None, 4, 1, 4),  # the config's own: LoRA over 4 GPUs of a node (DDP)
        ("{strategy: deepspeed_zero3, gpus_per_job: 8, nodes: 2}", 8, 2, 16),  # the model card's full fine-tuning
    ],
)
def test_gpu_study_prints_its_gpus_nodes_and_launch_commands(
    distributed, gpus, nodes, processes, work, fake_api, offline_env, tmp_path
):
    """The Zephyr LoRA study under the SLURM profile: every training job's GPUs, nodes and the
    `accelerate launch` it runs; the shared-engine generate job; then `dpolab.plan`'s table."""
    name = "ultrafeedback-zephyr"
    judges = json.dumps(judge_overrides(name, fake_api.base_url))
    extra = (
        [f"distributed={distributed}", "dpo={batch_size: 32, gradient_accumulation_steps: 1}", "peft=null"]
        if distributed
        else []
    )
    done = subprocess.run(
        [
            SNAKEMAKE,
            "-n",
            "--profile",
            "profiles/slurm",
            "--configfile",
            f"configs/studies/{name}.yaml",
            "--config",
            NO_SERVER,
            f"judges={judges}",
            *extra,
        ],
        cwd=work,
        env=offline_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    training = [block for block in dry_run_jobs(output) if "rule dpo (" in block]
    assert len(training) == 3  # dpo at two betas and SimPO
    for block in training:
        assert f"{gpus} GPU(s) per node x {nodes} node(s)" in block, block
        launch = block.split("launch: ", 1)[1]
        assert f"--num_processes {processes} --num_machines {nodes} --mixed_precision bf16" in launch, launch
        strategy = "ddp" if distributed is None else "deepspeed_zero3"
        assert f"envs/accelerate/{strategy}.yaml --num_processes" in launch and "-m dpolab.launch" in launch
        if nodes > 1:  # one launcher per node, the node's rank from SLURM
            assert launch.startswith(f"srun --nodes {nodes} --ntasks-per-node 1 bash -c") and "$SLURM_NODEID" in launch
    generation = [block for block in dry_run_jobs(output) if "rule generate" in block]
    if distributed is None:  # the 3 LoRA policies in one engine (adapters_per_engine 4); the base model on its own
        assert sum("rule generate_adapters_0:" in block for block in generation) == 1
        assert sum("rule generate:" in block for block in generation) == 1
    for block in generation:
        assert re.search(r"\bgpu=1\b", block), block
    if distributed is not None:
        return
    (tmp_path / "dry_run.txt").write_text(output)  # `make dry-run`'s plan of the same jobs
    plan = subprocess.run(
        [sys.executable, "-m", "dpolab.plan", f"configs/studies/{name}.yaml", str(tmp_path / "dry_run.txt")],
        cwd=work,
        env=offline_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert plan.returncode == 0, plan.stderr
    rows = {
        line.split()[0]: line.split()
        for line in plan.stdout.splitlines()[3:]
        if line.split() and line.split()[0] not in ("total", "largest") and not line.startswith("-")
    }
    assert rows["dpo"][1] == "3" and rows["dpo"][2] == "4"  # 3 jobs of 4 GPUs
    assert rows["generate_adapters_0"][1] == "1"
    (total,) = [line.split() for line in plan.stdout.splitlines() if line.startswith("total ")]
    assert float(total[-1]) == pytest.approx(sum(float(row[-1]) for row in rows.values()), abs=0.2)  # GPU-hours
    assert float(rows["dpo"][-1]) > 0


def test_the_offline_example_dry_runs_and_names_its_local_judge_server(work, offline_env):
    """configs/preference_file.yaml: `make study` starts its HTTP judge (dpolab.judge_server), here a
    stand-in answering the model listing on another port; the DAG has the preference study's rules."""
    from dpolab.config import read_yaml
    from dpolab.judge_server import SERVABLE, local_judges

    config = read_yaml(ROOT / "configs" / "preference_file.yaml")
    ((judge, port, served),) = local_judges(config)
    assert judge == "llm" and port == 8011 and served in SERVABLE
    with FakeModelList([served]) as server:
        override = json.dumps({"llm": {"base_url": server.base_url}})
        done = subprocess.run(
            [
                SNAKEMAKE,
                "-n",
                "--quiet",
                "rules",
                "--configfile",
                "configs/preference_file.yaml",
                "--config",
                f"judges={override}",
            ],
            cwd=work,
            env=offline_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    counts = rule_counts(done.stdout + done.stderr)
    assert {"data", "reward_model", "sft", "reference", "dpo", "kto", "pairwise_judge"} <= set(counts)
    assert "pairs" not in counts and "judge" not in counts
    assert counts["dpo"] == 4 and counts["generate"] == 6  # dpo/ipo x 2 betas, kto; + SFT
