"""Job resources sized from the config (dpolab.resources), and the profiles that use them:
parameter counts pinned to real models, scaling with batch and steps, gpu only on cuda, and
dry runs of the shipped profiles (the GPU-scale study under profiles/slurm)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPTNeoXConfig, LlamaConfig

from dpolab.config import ROOT, read_study
from dpolab.errors import ConfigError
from dpolab.resources import (GPU_STAGES, PACKAGE_MODEL_PARAMS, decoder_params, job_resources, model_params,
                              params_from_hf_config)

from conftest import copy_workflow

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
STAGES = ["mlflow_study", "data", "judge", "base_model", "sft", "pairs", "reference", "dpo", "generate", "evaluate",
          "pairwise_judge", "compare", "summary"]


def counted(hf_config) -> int:
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("hf_config", [
    LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                vocab_size=32000, tie_word_embeddings=False),  # Llama-2-7B
    GPTNeoXConfig(hidden_size=2560, intermediate_size=10240, num_hidden_layers=32, num_attention_heads=32,
                  vocab_size=50304, tie_word_embeddings=False),  # Pythia-2.8B
    GPT2Config(n_embd=1280, n_layer=36, n_head=20),  # GPT-2 large (the paper's IMDb model)
], ids=["llama-2-7b", "pythia-2.8b", "gpt2-large"])
def test_params_from_hf_config_match_the_model(hf_config):
    estimate, exact = params_from_hf_config(hf_config.to_dict()), counted(hf_config)
    assert estimate == pytest.approx(exact, rel=0.01), (estimate, exact)  # biases and norms are left out


def test_scratch_and_package_counts_are_exact(vllm_model_dir):
    config = read_study(ROOT / "configs" / "smoke.yaml")
    model = AutoModelForCausalLM.from_pretrained(vllm_model_dir)  # the smoke config's scratch model, built for real
    norms = sum(p.numel() for n, p in model.named_parameters() if "norm" in n)
    assert model_params(config.config["model"]) == model.num_parameters() - norms
    # the package model's count is a constant (reading the GGUF's tensor table takes ~15 s): pin it
    from gguf import GGUFReader
    from dpolab.locate import gguf_path

    default = read_study(ROOT / "configs" / "default.yaml").config["model"]
    reader = GGUFReader(gguf_path(default))
    assert PACKAGE_MODEL_PARAMS[(default["package"], default["gguf_file"])] == sum(int(t.n_elements) for t in reader.tensors)
    assert model_params(default) == 134_515_008


def test_model_params_sources(tmp_path, monkeypatch):
    config = read_study(ROOT / "configs" / "smoke.yaml")
    assert model_params({**config.config["model"], "n_params": 7e9}) == 7_000_000_000  # the config wins
    local = tmp_path / "ckpt"
    local.mkdir()
    (local / "config.json").write_text(json.dumps(GPT2Config(n_embd=768, n_layer=12).to_dict()))
    assert model_params({**config.config["model"], "source": "local", "path": str(local)}) == pytest.approx(124e6, rel=0.02)
    with pytest.raises(ConfigError, match=r"model.path: .*missing/config.json not found"):
        model_params({**config.config["model"], "source": "local", "path": str(tmp_path / "missing")})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert model_params({**config.config["model"], "source": "hub", "path": "EleutherAI/pythia-2.8b", "revision": None}) is None


def test_decoder_params_formula():
    # embeddings once (tied) + per layer 4 h^2 (attention) + 3 h i (gated MLP)
    assert decoder_params(vocab_size=10, hidden_size=4, num_layers=2, intermediate_size=8) == 10 * 4 + 2 * (4 * 16 + 3 * 4 * 8)
    assert decoder_params(vocab_size=10, hidden_size=4, num_layers=1, intermediate_size=8, tie_word_embeddings=False,
                          gated_mlp=False) == 2 * 10 * 4 + 4 * 16 + 2 * 4 * 8


def test_resources_scale_with_the_config():
    config = read_study(ROOT / "configs" / "default.yaml")
    n = 134_515_008
    base = {stage: job_resources(stage, config, n) for stage in STAGES}
    for stage, resources in base.items():
        assert isinstance(resources["mem_mb"], int) and isinstance(resources["runtime"], int), stage
        assert resources["mem_mb"] >= 2000 and resources["runtime"] >= 15 and "gpu" not in resources, stage
    bigger_batch = read_study(ROOT / "configs" / "default.yaml", {"dpo": {"batch_size": 64}})
    assert job_resources("dpo", bigger_batch, n)["mem_mb"] > base["dpo"]["mem_mb"]
    longer = read_study(ROOT / "configs" / "default.yaml", {"dpo": {"max_steps": 100_000}})
    assert job_resources("dpo", longer, n)["runtime"] > base["dpo"]["runtime"]
    # a 7B model: more memory for every model stage, more time for training
    for stage in ("base_model", "sft", "dpo", "generate", "evaluate", "reference"):
        assert job_resources(stage, config, 7_000_000_000)["mem_mb"] > base[stage]["mem_mb"], stage
    assert job_resources("dpo", longer, 7_000_000_000)["runtime"] > job_resources("dpo", longer, n)["runtime"]
    # CPU training holds weights, gradients and AdamW moments in host memory: at least 16 bytes per parameter
    assert job_resources("dpo", config, 7_000_000_000)["mem_mb"] * 2**20 > 16 * 7e9


def test_gpu_requested_only_on_cuda_and_only_by_device_stages():
    config = read_study(ROOT / "configs" / "default.yaml", {"device": "cuda"})
    for stage in STAGES:
        assert job_resources(stage, config, 2_780_000_000).get("gpu") == (1 if stage in GPU_STAGES else None), stage
    with pytest.raises(ValueError, match="unknown stage 'nope'"):
        job_resources("nope", config, 1)


# the GPU study's tracking server (mlflow.example.org) does not exist: every launch, dry runs too,
# checks that the server answers, so these runs use the default sqlite store instead
NO_SERVER = ("--config", "mlflow={tracking_uri: null}")


def dry_run(work: Path, *args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([SNAKEMAKE, "-n", *args], cwd=work, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, **(env or {})))


def job_blocks(output: str) -> list[tuple[str, str]]:
    """(rule, its printed block) for every job of a dry run."""
    return re.findall(r"^rule (\w+):\n((?:    .*\n)+)", output, flags=re.M)


def test_gpu_study_dry_runs_under_the_slurm_profile(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    done = dry_run(work, "--profile", "profiles/slurm", "--configfile", "configs/studies/imdb-pythia-2.8b.yaml", *NO_SERVER,
                   env={"HF_HUB_CACHE": str(tmp_path / "empty-cache")})  # nothing cached, nothing downloaded
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    config = read_study(work / "configs" / "studies" / "imdb-pythia-2.8b.yaml", check_environment=False)
    blocks = job_blocks(done.stdout)
    assert sum(rule == "dpo" for rule, _ in blocks) == 60  # dozens of grid points
    for rule, block in blocks:
        if rule == "all":  # the target rule runs no job
            continue
        resources = dict(re.findall(r"(\w+)=([^,\s]+)", re.search(r"resources: (.*)", block).group(1)))
        assert resources.get("gpu") == ("1" if rule in GPU_STAGES else None), rule
        expected = job_resources(rule, config, int(config.config["model"]["n_params"]))
        assert int(resources["mem_mb"]) == expected["mem_mb"] and int(resources["runtime"]) == expected["runtime"], rule


def test_hub_model_of_unknown_size_is_refused_on_a_cluster_only(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    config = (work / "configs" / "studies" / "imdb-pythia-2.8b.yaml").read_text()
    (work / "configs" / "nosize.yaml").write_text(re.sub(r"\n  n_params:.*", "", config))
    env = {"HF_HUB_CACHE": str(tmp_path / "empty-cache")}
    # a real cluster launch (a dry run cannot tell: Snakemake gives it one local core): refused
    # while the workflow is read, before any job is submitted
    refused = subprocess.run([SNAKEMAKE, "--profile", "profiles/slurm", "--configfile", "configs/nosize.yaml", *NO_SERVER], cwd=work,
                             capture_output=True, text=True, timeout=300, env=dict(os.environ, **env))
    assert refused.returncode != 0 and not (work / "results").exists() and not (work / ".snakemake" / "slurm_logs").exists()
    assert "model.n_params: needed to size cluster jobs" in refused.stdout + refused.stderr
    assert "EleutherAI/pythia-2.8b" in refused.stdout + refused.stderr
    local = dry_run(work, "--cores", "2", "--configfile", "configs/nosize.yaml", *NO_SERVER, env=env)
    assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]


def test_local_threads_follow_cores(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    done = dry_run(work, "--cores", "4", "--configfile", "configs/smoke.yaml")
    assert done.returncode == 0, done.stderr[-3000:]
    threads = {rule: int(re.search(r"threads: (\d+)", block).group(1)) for rule, block in job_blocks(done.stdout)
               if "threads:" in block}
    assert threads["sft"] == 4 and threads["dpo"] == 2 and threads["generate"] == 2
