"""Session fixtures every folder uses: tiny models built from the smoke config. The e2e study fixtures
live in tests/e2e/conftest.py, shared helpers in tests/helpers/."""

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny Llama made from scratch with the package model's tokenizer (as configs/smoke.yaml)."""
    from dpolab.config import ROOT, read_study
    from dpolab.models import prepare_base_model

    model = read_study(ROOT / "configs" / "smoke.yaml", check_environment=False).section("model")
    model_cfg = dict(model, scratch=dict(model["scratch"], hidden_size=32, intermediate_size=64))
    out = tmp_path_factory.mktemp("tiny") / "model"
    prepare_base_model(model_cfg, out)
    return out


@pytest.fixture(scope="session")
def vllm_model_dir(tmp_path_factory):
    """The smoke config's tiny Llama (head_dim 64): vLLM's CPU attention does not take the
    head_dim 16 of tiny_model_dir."""
    from dpolab.config import ROOT, read_study
    from dpolab.models import prepare_base_model

    out = tmp_path_factory.mktemp("tiny-vllm") / "model"
    prepare_base_model(read_study(ROOT / "configs" / "smoke.yaml", check_environment=False).section("model"), out)
    return out
