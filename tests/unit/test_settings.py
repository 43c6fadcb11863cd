"""The typed settings of each config section (dpolab.settings): defaults that follow the device,
and impossible combinations refused naming the key."""

import pytest

from dpolab.config import ROOT, read_study
from dpolab.errors import ConfigError
from dpolab.settings import TrainingSettings


def smoke(overrides):
    return read_study(ROOT / "configs" / "smoke.yaml", overrides, check_environment=False)


def test_precision_defaults_follow_the_device():
    assert smoke({}).training.precision == "fp32" and smoke({}).training.torch_dtype == "float32"
    gpu = read_study(ROOT / "configs" / "studies" / "imdb-pythia-2.8b.yaml", check_environment=False).training
    assert gpu.precision == "bf16" and gpu.torch_dtype == "float32"  # fp32 master weights under bf16 autocast
    assert TrainingSettings(device="cuda", lora=True).torch_dtype == "bfloat16"  # a frozen LoRA base in bf16
    assert TrainingSettings(device="cuda").trainer_args == {
        "bf16": True,
        "fp16": False,
        "gradient_checkpointing": False,
    }


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"training": {"precision": "fp16"}}, "training.precision"),
        ({"training": {"torch_dtype": "float16"}}, "training.torch_dtype"),
        (
            {"training": {"torch_dtype": "bfloat16"}},
            "training.torch_dtype",
        ),  # half-precision master weights under AdamW
        ({"peft": {"load_in_4bit": True}}, "peft.load_in_4bit"),
        (
            {"device": "cuda", "peft": {"load_in_4bit": True}},
            "peft.load_in_4bit",
        ),  # a 4-bit model cannot be fully fine-tuned in SFT
        ({"distributed": {"gpus_per_job": 2}}, "distributed.strategy"),
        ({"distributed": {"strategy": "fsdp", "gpus_per_job": 2}}, "distributed.strategy"),
        ({"distributed": {"strategy": "ddp", "nodes": 2}}, "distributed.nodes"),
        ({"distributed": {"tensor_parallel_size": 2}}, "distributed.tensor_parallel_size"),
        ({"distributed": {"strategy": "ddp", "gpus_per_job": 3}}, "dpo.batch_size"),
        ({"distributed": {"strategy": "ddp", "gpus_per_job": 2}, "sft": {"batch_size": 5}}, "sft.batch_size"),
        ({"peft": {"r": 0}}, "peft.r"),
        ({"peft": {"target_modules": []}}, "peft.target_modules"),
        ({"training": {"precision": "fp8"}}, "training.precision"),
    ],
)
def test_impossible_settings_are_refused_naming_the_key(overrides, key):
    with pytest.raises(ConfigError) as error:
        smoke(overrides)
    assert key in str(error.value), str(error.value)


def test_possible_settings_are_accepted():
    study = smoke(
        {
            "peft": {"r": 4, "target_modules": ["q_proj", "v_proj"]},
            "distributed": {"strategy": "ddp", "gpus_per_job": 2},
            "training": {"precision": "bf16"},
        }
    )
    assert study.peft.target_modules == ("q_proj", "v_proj") and study.distributed.processes == 2
    assert study.training.torch_dtype == "bfloat16"  # bf16 autocast on the CPU is possible (if slow without AMX)
    qlora = smoke(
        {
            "device": "cuda",
            "peft": {"load_in_4bit": True, "sft": "lora"},
            "distributed": {"strategy": "deepspeed_zero3", "gpus_per_job": 4, "nodes": 2},
            **{section: {"batch_size": 16} for section in ("sft", "dpo")},
        }
    )
    assert qlora.distributed.processes == 8 and qlora.training.precision == "bf16"
