"""Job resources sized from the config (dpolab.resources), and the profiles that use them:
parameter counts pinned to real models, scaling with batch and steps, gpu only on cuda, the
training memory estimate checked against published numbers (ZeRO, QLoRA, the DPO and Zephyr
recipes), and dry runs of the shipped profiles (the GPU-scale study under profiles/slurm)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPTNeoXConfig, LlamaConfig, MistralConfig

from dpolab.config import ROOT, read_study
from dpolab.errors import ConfigError
from dpolab.resources import (
    GPU_STAGES,
    PACKAGE_MODEL_PARAMS,
    TRAINING_STAGES,
    VLLM_STAGES,
    ModelShape,
    decoder_params,
    job_resources,
    model_params,
    params_from_hf_config,
    training_flops,
    training_memory,
)
from helpers.workflow import copy_workflow

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
STAGES = [
    "mlflow_study",
    "data",
    "judge",
    "base_model",
    "sft",
    "pairs",
    "reference",
    "dpo",
    "generate",
    "evaluate",
    "pairwise_judge",
    "compare",
    "summary",
]


def counted(hf_config) -> int:
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "hf_config",
    [
        LlamaConfig(
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            vocab_size=32000,
            tie_word_embeddings=False,
        ),  # Llama-2-7B
        GPTNeoXConfig(
            hidden_size=2560,
            intermediate_size=10240,
            num_hidden_layers=32,
            num_attention_heads=32,
            vocab_size=50304,
            tie_word_embeddings=False,
        ),  # Pythia-2.8B
        GPT2Config(n_embd=1280, n_layer=36, n_head=20),  # GPT-2 large (the paper's IMDb model)
    ],
    ids=["llama-2-7b", "pythia-2.8b", "gpt2-large"],
)
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
    assert PACKAGE_MODEL_PARAMS[(default["package"], default["gguf_file"])] == sum(
        int(t.n_elements) for t in reader.tensors
    )
    assert model_params(default) == 134_515_008


def test_model_params_sources(tmp_path, monkeypatch):
    config = read_study(ROOT / "configs" / "smoke.yaml")
    assert model_params({**config.config["model"], "n_params": 7e9}) == 7_000_000_000  # the config wins
    local = tmp_path / "ckpt"
    local.mkdir()
    (local / "config.json").write_text(json.dumps(GPT2Config(n_embd=768, n_layer=12).to_dict()))
    assert model_params({**config.config["model"], "source": "local", "path": str(local)}) == pytest.approx(
        124e6, rel=0.02
    )
    with pytest.raises(ConfigError, match=r"model.path: .*missing/config.json not found"):
        model_params({**config.config["model"], "source": "local", "path": str(tmp_path / "missing")})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert (
        model_params({**config.config["model"], "source": "hub", "path": "EleutherAI/pythia-2.8b", "revision": None})
        is None
    )


def test_decoder_params_formula():
    # embeddings once (tied) + per layer 4 h^2 (attention) + 3 h i (gated MLP)
    assert decoder_params(vocab_size=10, hidden_size=4, num_layers=2, intermediate_size=8) == 10 * 4 + 2 * (
        4 * 16 + 3 * 4 * 8
    )
    assert (
        decoder_params(
            vocab_size=10, hidden_size=4, num_layers=1, intermediate_size=8, tie_word_embeddings=False, gated_mlp=False
        )
        == 2 * 10 * 4 + 4 * 16 + 2 * 4 * 8
    )


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


# ---- training memory and the resources that follow the training settings -----------------------
# Real models' shapes (their config.json values) for the estimate's published-number checks.
LLAMA_2_7B = LlamaConfig(
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    vocab_size=32000,
    tie_word_embeddings=False,
)
MISTRAL_7B = MistralConfig(
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=32000,
    tie_word_embeddings=False,
)
PYTHIA_2_8B = GPTNeoXConfig(
    hidden_size=2560,
    intermediate_size=10240,
    num_hidden_layers=32,
    num_attention_heads=32,
    vocab_size=50304,
    tie_word_embeddings=False,
)
LLAMA_65B = LlamaConfig(
    hidden_size=8192,
    intermediate_size=22016,
    num_hidden_layers=80,
    num_attention_heads=64,
    vocab_size=32000,
    tie_word_embeddings=False,
)
ZEPHYR = ROOT / "configs" / "studies" / "ultrafeedback-zephyr.yaml"  # Mistral-7B, device: cuda
HH = ROOT / "configs" / "studies" / "hh-rlhf-pythia-2.8b.yaml"  # Pythia-2.8B, device: cuda
GB = 1e9
# Every setting the estimate reads, pinned (the shipped studies' training:, peft: and distributed:
# follow their recipes and change with them): one process, bf16 autocast, full fine-tuning, no
# recomputation, 2 examples of 1024 tokens a step. Each test changes what it checks.
BASELINE = {
    "training": {"precision": "bf16", "torch_dtype": None, "gradient_checkpointing": False},
    "peft": None,
    "distributed": {"strategy": "none", "gpus_per_job": 1, "nodes": 1, "tensor_parallel_size": 1},
    **{
        stage: {"batch_size": 2, "max_length": 1024, "max_steps": 100, "gradient_accumulation_steps": 1}
        for stage in TRAINING_STAGES
    },
}
# LoRA r=16 on every linear module of the decoder layers (PEFT's defaults but the rank's scale)
LORA = {
    "r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "target_modules": "all-linear",
    "load_in_4bit": False,
    "sft": "full",
}


def study(path, **overrides):
    """The study file with BASELINE's settings and then `overrides` (a section's keys merge; peft: a
    dict is a whole peft: section, on LORA's values)."""
    merged = {key: dict(value) if isinstance(value, dict) else value for key, value in BASELINE.items()}
    for key, value in overrides.items():
        if key == "peft":
            merged[key] = None if value is None else {**LORA, **value}
        elif isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return read_study(path, merged, check_environment=False)


def parallel(path, strategy, gpus, nodes=1, per_process=1, **overrides):
    """A study whose training jobs run gpus x nodes processes, each taking per_process examples a step."""
    merged = {
        "distributed": {"strategy": strategy, "gpus_per_job": gpus, "nodes": nodes},
        **{stage: {"batch_size": per_process * gpus * nodes} for stage in TRAINING_STAGES},
    }
    for key, value in overrides.items():
        merged[key] = {**merged.get(key, {}), **value}
    return study(path, **merged)


def shape(hf_config) -> ModelShape:
    return ModelShape.from_hf_config(hf_config.to_dict())


@pytest.mark.parametrize(
    "hf_config, trainable, total",
    [
        (LLAMA_2_7B, 39_976_960, 6_778_392_576),
        (MISTRAL_7B, 41_943_040, 7_283_675_136),
        (PYTHIA_2_8B, 20_971_520, 2_796_180_480),
    ],
    ids=["llama-2-7b", "mistral-7b", "pythia-2.8b"],
)
def test_lora_adapters_are_counted_as_peft_counts_them(hf_config, trainable, total):
    """r=16 on all-linear, the adapters PEFT makes on a meta-device model (print_trainable_parameters:
    "trainable params: 39,976,960 || all params: 6,778,392,576 || trainable%: 0.5898" for Llama-2-7B;
    41,943,040 of 7,283,675,136, 0.5758%, for Mistral-7B; 20,971,520 of 2,796,180,480, 0.75%, for
    Pythia-2.8B's fused query_key_value): well under 1% of the model is trained."""
    from peft import LoraConfig, get_peft_model

    with torch.device("meta"):
        model = get_peft_model(
            AutoModelForCausalLM.from_config(hf_config),
            LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"),
        )
    assert model.get_nb_trainable_parameters() == (trainable, total)
    assert shape(hf_config).adapter_params(16, "all-linear") == trainable
    assert trainable / total < 0.0076
    # a bare parameter count (the config's model.n_params): a Llama-like guess, 6-7% under for Llama-2-7B
    # and Mistral-7B, 15% over for Pythia-2.8B (fused attention, a two-layer MLP)
    guess = ModelShape.from_params(total - trainable).adapter_params(16, "all-linear")
    assert guess == pytest.approx(trainable, rel=0.2)
    if hf_config is LLAMA_2_7B:  # named modules: q_proj and v_proj alone, r=8 (PEFT's classic example)
        assert shape(hf_config).adapter_params(8, ("q_proj", "v_proj")) == 32 * 8 * (2 * 4096 + 2 * 4096) == 4_194_304


def test_full_finetuning_of_a_7b_model_needs_16_bytes_a_parameter():
    """Full fine-tuning with mixed-precision AdamW: 16 bytes a parameter of weights, gradients and
    optimizer states (Rajbhandari et al. 2020, "ZeRO", arXiv:1910.02054, Sec. 3.1: 16Ψ), 115.8 GB for
    Mistral-7B, and torch autocast's half-precision copy on top (the 6 + 4 + 8 = 18 bytes of the
    transformers docs' "GPU memory usage" page): more than one 80 GB GPU holds. The alignment-handbook
    runs its full DPO of Zephyr-7B (recipes/zephyr-7b-beta: "You will require 8 GPUs (80GB of VRAM)",
    accelerate_configs/zero3.yaml, dpo/config_full.yaml: per_device_train_batch_size 8, max_length
    1024, gradient_checkpointing, bf16) with the states sharded over 8 GPUs: 16Ψ/8 a GPU."""
    n = 7.24e9
    one = training_memory(n, study(ZEPHYR), "dpo", shape(MISTRAL_7B))
    assert one.states == 16 * n and 112 * GB <= one.states <= 120 * GB
    assert one.states + one.buffers == 18 * n
    assert one.total > 80 * GB
    handbook = parallel(
        ZEPHYR, "deepspeed_zero3", 8, per_process=8, dpo={"max_length": 1024}, training={"gradient_checkpointing": True}
    )
    zero3 = training_memory(n, handbook, "dpo", shape(MISTRAL_7B))
    assert zero3.states == pytest.approx(16 * n / 8) and zero3.tokens == 8 * 2 * 1024  # 8 pairs a GPU
    assert zero3.total < 80 * GB


def test_zero_paper_model_states_per_gpu():
    """Rajbhandari et al. 2020 ("ZeRO", arXiv:1910.02054), Figure 1: a 7.5B model, 64 GPUs, mixed-precision
    Adam (K = 12): 120 GB a GPU under data parallelism, 16.6 GB with optimizer states and gradients
    partitioned (P_os+g, DeepSpeed ZeRO-2), 1.9 GB with the parameters too (P_os+g+p, ZeRO-3). PyTorch's
    DDP keeps its all-reduce buckets besides the gradients (its gradient_as_bucket_view docs: setting
    it saves "the total gradients size"): 4 bytes a parameter more."""
    n = 7.5e9

    def states(strategy, gpus=8, nodes=8):
        return training_memory(n, parallel(ZEPHYR, strategy, gpus, nodes), "dpo").states / GB

    assert states("none", 1, 1) == pytest.approx(120)
    assert states("ddp") == pytest.approx(120 + 4 * n / GB)
    assert round(states("deepspeed_zero2"), 1) == 16.6
    assert round(states("deepspeed_zero3"), 1) == 1.9
    assert round(states("fsdp"), 1) == 1.9  # FULL_SHARD: fp32 weights, gradients, moments, all sharded


def test_lora_and_qlora_of_a_7b_model_fit_a_24gb_gpu():
    """LoRA (r=16, all-linear) on Mistral-7B's bf16 base: 2 bytes a frozen parameter (14.5 GB) and 16
    bytes an adapter parameter; with gradient checkpointing a pair of 1024 tokens fits a 24 GB GPU, as
    LoRA recipes for 7B models on 24 GB cards do (without recomputation it does not). QLoRA (Dettmers et
    al. 2023, arXiv:2305.14314): the NF4 base with double quantization, 4.127 bits a weight, ~4 GB for a
    7B model; the alignment-handbook's QLoRA DPO of Zephyr-7B (dpo/config_qlora.yaml: one GPU, 4 pairs of
    1024 tokens, gradient checkpointing) well under 24 GB; and the paper's headline, a 65B model on one
    48 GB GPU."""
    n = 7.24e9
    lora = study(ZEPHYR, peft={}, training={"gradient_checkpointing": True}, dpo={"batch_size": 1})
    assert lora.training.torch_dtype == "bfloat16"
    estimate = training_memory(n, lora, "dpo", shape(MISTRAL_7B))
    assert estimate.trainable_params == 41_943_040 and estimate.tokens == 2 * 1024
    assert estimate.weights == pytest.approx(2 * n + 4 * 41_943_040)
    assert estimate.gradients + estimate.optimizer == 12 * 41_943_040
    assert estimate.total < 24 * GB
    sft = study(ZEPHYR, peft={"sft": "lora"}, training={"gradient_checkpointing": True})  # 2 texts of 1024 tokens
    assert training_memory(n, sft, "sft", shape(MISTRAL_7B)).total < 24 * GB
    without = study(ZEPHYR, peft={}, dpo={"batch_size": 1})
    assert training_memory(n, without, "dpo", shape(MISTRAL_7B)).total > 24 * GB

    qlora = study(
        ZEPHYR,
        peft={"load_in_4bit": True, "sft": "lora"},
        training={"gradient_checkpointing": True},
        dpo={"batch_size": 4},
    )
    q = training_memory(n, qlora, "dpo", shape(MISTRAL_7B))
    assert 3.5 * GB < q.weights < 4.5 * GB
    assert q.total < 16 * GB
    # 65B: the base alone ~34 GB. The paper trains r=64 adapters held in bf16 with a paged optimizer; PEFT
    # keeps adapters in fp32 (16 bytes each, the estimate's accounting), so r=16 is the setting checked here
    qlora_65b = study(
        ZEPHYR,
        peft={"load_in_4bit": True, "sft": "lora"},
        training={"gradient_checkpointing": True},
        dpo={"batch_size": 1, "max_length": 512},
    )
    q65 = training_memory(65.2e9, qlora_65b, "dpo", shape(LLAMA_65B))
    assert 33 * GB < q65.weights - 4 * q65.trainable_params < 36 * GB
    assert q65.total < 48 * GB


def test_pythia_2_8b_full_finetuning():
    """Pythia-2.8B (the DPO paper's HH model): 16 bytes a parameter, 44.5 GB of model states, more than a
    40 GB GPU holds. The DPO reference implementation (github.com/eric-mitchell/direct-preference-optimization,
    README) runs its SFT with FSDP and bf16 mixed precision "on a machine with 4 80GB A100s", batch_size=64
    in gradient_accumulation_steps=2 (8 sequences a GPU a step) of 512 tokens: a quarter of the states a GPU."""
    n = 2.78e9
    one = training_memory(n, study(HH), "sft", shape(PYTHIA_2_8B))
    assert one.states == pytest.approx(44.48 * GB) and one.states > 40 * GB
    reference = parallel(HH, "fsdp", 4, per_process=8, sft={"max_length": 512, "gradient_accumulation_steps": 2})
    fsdp = training_memory(n, reference, "sft", shape(PYTHIA_2_8B))
    assert fsdp.states == pytest.approx(one.states / 4) and fsdp.tokens == 8 * 512
    assert fsdp.total < 80 * GB


def test_memory_follows_the_settings():
    n = 7.24e9
    full, checkpointed = study(ZEPHYR), study(ZEPHYR, training={"gradient_checkpointing": True})
    for stage in TRAINING_STAGES:  # recomputation: activations a fraction, model states unchanged
        plain, recomputed = training_memory(n, full, stage), training_memory(n, checkpointed, stage)
        assert recomputed.activations < plain.activations / 3 and recomputed.states == plain.states, stage
    lora = study(ZEPHYR, peft={})
    lora_checkpointed = study(ZEPHYR, peft={}, training={"gradient_checkpointing": True})
    assert training_memory(n, lora_checkpointed, "dpo").activations < training_memory(n, lora, "dpo").activations / 3
    # bf16 activations take fewer bytes than fp32 ones
    fp32 = study(ZEPHYR, training={"precision": "fp32"})
    assert training_memory(n, fp32, "dpo").activations > 1.4 * training_memory(n, full, "dpo").activations
    # more processes, the same examples each: sharding lowers the memory of a GPU, ddp does not
    for strategy in ("deepspeed_zero2", "deepspeed_zero3", "fsdp"):
        per_gpu = [training_memory(n, parallel(ZEPHYR, strategy, gpus), "dpo").total for gpus in (2, 4, 8)]
        assert per_gpu[0] > per_gpu[1] > per_gpu[2], strategy
    ddp = [training_memory(n, parallel(ZEPHYR, "ddp", gpus), "dpo").total for gpus in (2, 4, 8)]
    assert ddp[0] == ddp[1] == ddp[2]
    # batch_size is the step's examples over all processes: each process takes its share
    for gpus in (1, 2, 8):
        config = study(
            ZEPHYR,
            distributed={"strategy": "ddp" if gpus > 1 else "none", "gpus_per_job": gpus},
            **{stage: {"batch_size": 16} for stage in TRAINING_STAGES},
        )
        assert training_memory(n, config, "dpo").tokens == 16 * 2 * 1024 // gpus  # pairs: chosen and rejected
    # the adapters are what LoRA trains; the reward model and a full SFT (peft.sft: full) are fully fine-tuned
    assert training_memory(n, lora, "dpo").trainable_params < 0.01 * n
    assert training_memory(n, lora, "sft").trainable_params == n
    assert training_memory(n, lora, "reward_model").trainable_params == n
    with pytest.raises(ValueError, match="not a training stage"):
        training_memory(n, full, "generate")


def test_gpus_and_nodes_follow_the_distributed_settings():
    n = 7_240_000_000
    multi = parallel(ZEPHYR, "deepspeed_zero3", 4, nodes=2, distributed={"tensor_parallel_size": 2})
    for stage in STAGES:
        resources = job_resources(stage, multi, n)
        if stage in TRAINING_STAGES:  # --gpus is the job's total (all nodes), --nodes the node count
            assert resources["gpu"] == 8 and resources["nodes"] == 2, stage
        else:
            assert "nodes" not in resources, stage
            assert resources.get("gpu") == (2 if stage in VLLM_STAGES else 1 if stage in GPU_STAGES else None), stage
    one_node = parallel(ZEPHYR, "fsdp", 4)
    assert job_resources("dpo", one_node, n)["gpu"] == 4 and "nodes" not in job_resources("dpo", one_node, n)
    # on the CPU: no gpu, no nodes; ddp processes each hold the whole training memory in host memory
    cpu = read_study(ROOT / "configs" / "default.yaml")
    cpu_ddp = read_study(ROOT / "configs" / "default.yaml", {"distributed": {"strategy": "ddp", "gpus_per_job": 2}})
    for stage in STAGES:
        assert not {"gpu", "nodes"} & set(job_resources(stage, cpu_ddp, n)), stage
    small = 134_515_008
    assert job_resources("dpo", cpu_ddp, small)["mem_mb"] * 2**20 > 2 * training_memory(small, cpu_ddp, "dpo").total
    assert job_resources("dpo", cpu_ddp, small)["mem_mb"] > job_resources("dpo", cpu, small)["mem_mb"]
    # on the GPU the host stages the weights once per process of the node: fp32 for full fine-tuning,
    # bf16 for a LoRA base
    eight = parallel(ZEPHYR, "deepspeed_zero3", 8)
    assert job_resources("dpo", eight, n)["mem_mb"] * 2**20 > 8 * 4 * n
    host = [
        job_resources("dpo", study(ZEPHYR, peft=peft), n)["mem_mb"]
        for peft in (None, {}, {"load_in_4bit": True, "sft": "lora"})
    ]
    assert host[0] > host[1] > host[2]  # fp32, bf16, NF4


def test_runtime_follows_the_settings():
    n = 7_240_000_000

    def runtime(config, stage="dpo"):
        return job_resources(stage, config, n)["runtime"]

    longer = {"dpo": {"max_steps": 5000}}  # long enough that start-up does not blur the ratios
    full, lora = study(ZEPHYR, **longer), study(ZEPHYR, peft={}, **longer)
    checkpointed = study(ZEPHYR, training={"gradient_checkpointing": True}, **longer)
    # FLOPs a token: 6N full, 4N LoRA (no weight gradients for the base), 2N more to recompute
    assert training_flops(n, full, "dpo") == 6 * n * 2 * 2 * 1024 * 5000  # pairs a step x 2 x tokens x steps
    assert training_flops(n, lora, "dpo") == pytest.approx(training_flops(n, full, "dpo") * 2 / 3)
    assert training_flops(n, checkpointed, "dpo") == pytest.approx(training_flops(n, full, "dpo") * 4 / 3)
    accumulated = study(ZEPHYR, dpo={"max_steps": 5000, "gradient_accumulation_steps": 4})
    assert training_flops(n, accumulated, "dpo") == 4 * training_flops(n, full, "dpo")
    assert runtime(lora) < runtime(full) < runtime(checkpointed)
    assert runtime(study(ZEPHYR, training={"precision": "fp32"}, **longer)) > 3 * runtime(full)  # bf16: faster
    # the same examples a step over 8 processes: several times faster, not quite 8
    one = parallel(ZEPHYR, "none", 1, per_process=8, **longer)
    eight = parallel(ZEPHYR, "deepspeed_zero3", 8, **longer)
    assert training_flops(n, one, "dpo") == training_flops(n, eight, "dpo")
    assert 5 * runtime(eight) < runtime(one) < 8 * runtime(eight)


# the GPU study's tracking server (mlflow.example.org) does not exist: every launch, dry runs too,
# checks that the server answers, so these runs use the default sqlite store instead
NO_SERVER = ("--config", "mlflow={tracking_uri: null}")


def dry_run(work: Path, *args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SNAKEMAKE, "-n", *args],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, **(env or {})),
    )


def job_blocks(output: str) -> list[tuple[str, str]]:
    """(rule, its printed block) for every job of a dry run."""
    return re.findall(r"^rule (\w+):\n((?:    .*\n)+)", output, flags=re.M)


def test_gpu_study_dry_runs_under_the_slurm_profile(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    done = dry_run(
        work,
        "--profile",
        "profiles/slurm",
        "--configfile",
        "configs/studies/imdb-pythia-2.8b.yaml",
        *NO_SERVER,
        env={"HF_HUB_CACHE": str(tmp_path / "empty-cache")},
    )  # nothing cached, nothing downloaded
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
    refused = subprocess.run(
        [SNAKEMAKE, "--profile", "profiles/slurm", "--configfile", "configs/nosize.yaml", *NO_SERVER],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, **env),
    )
    assert (
        refused.returncode != 0
        and not (work / "results").exists()
        and not (work / ".snakemake" / "slurm_logs").exists()
    )
    assert "model.n_params: needed to size cluster jobs" in refused.stdout + refused.stderr
    assert "EleutherAI/pythia-2.8b" in refused.stdout + refused.stderr
    local = dry_run(work, "--cores", "2", "--configfile", "configs/nosize.yaml", *NO_SERVER, env=env)
    assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]


def test_local_threads_follow_cores(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    done = dry_run(work, "--cores", "4", "--configfile", "configs/smoke.yaml")
    assert done.returncode == 0, done.stderr[-3000:]
    threads = {
        rule: int(re.search(r"threads: (\d+)", block).group(1))
        for rule, block in job_blocks(done.stdout)
        if "threads:" in block
    }
    assert threads["sft"] == 4 and threads["dpo"] == 2 and threads["generate"] == 2
