"""A validated study: the one object the Snakefile, the rule files and the job scripts read.

`dpolab.config.load_study` checks a config once and builds a `Study`; nothing here checks
input again or changes it. Every part is frozen: the grid, the variants and the resolved
config (schema defaults filled in, each variant's defaults made explicit) cannot be changed
by a rule or a script after the checks, so what was checked is what runs.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from dpolab.settings import (
    DataConfig,
    DistributedSettings,
    DPOSettings,
    EvaluationSettings,
    GenerationSettings,
    JudgeConfig,
    MlflowSettings,
    PairsSettings,
    PeftSettings,
    RewardModelSettings,
    SFTDataSettings,
    SFTSettings,
    TrainingSettings,
)

STARTS_FROM = ("sft", "base")


PAIRWISE_KINDS = ("llm_pairwise", "llm_http")  # judge kinds that compare two responses rather than score one


def format_value(value) -> str:
    """How a grid value is written in paths and names: `:g` (6 significant digits), so 1.0 is
    `1` and 0.05 is `0.05`. Values that would print alike are refused by the config check."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def parse_policy(policy: str) -> dict[str, str]:
    """`variant~v/beta~b/seed~s` -> {"variant": v, "beta": b, "seed": s}; `sft` -> {}. A checkpoint
    of a policy (`.../seed~s/step~n`, evaluation.checkpoints) adds "step": n."""
    return {} if policy == "sft" else dict(part.split("~", 1) for part in policy.split("/"))


def freeze(value):
    """A read-only copy: mappings become MappingProxyType, lists tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value):
    """A plain, writable copy (dicts and lists) of a frozen value: for YAML, JSON and MLflow."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return copy.copy(value)


@dataclass(frozen=True)
class Variant:
    """A variant of the study: a registry loss trained by the `dpo` rule, or a rule variant
    trained by its own rule file (workflow/rules/variants/<rule>.smk)."""

    name: str = field(metadata={"help": "the variant's name in the config, in paths and in the summary"})
    rule: str = field(
        metadata={"help": "the rule that trains it: 'dpo' for a registry loss, else the rule file's name"}
    )
    loss: str = field(metadata={"help": "the registry loss, or the rule of a rule variant (kto, orpo, ...)"})
    params: Mapping[str, Any] = field(
        metadata={"help": "the loss's parameters with defaults, or the rule variant's settings with defaults"}
    )
    betas: tuple[float, ...] = field(metadata={"help": "its own betas, or the grid's"})
    starts_from: str = field(
        default="sft", metadata={"help": "the model training starts from: sft, or base (SFT skipped)"}
    )
    checkpointed: bool = field(
        default=True,
        metadata={
            "help": "its rule saves the policy at evaluation.checkpoints (the dpo rule and the shipped rule "
            "variants do; a user's rule file does not)"
        },
    )

    def __post_init__(self):
        if self.starts_from not in STARTS_FROM:
            raise ValueError(f"starts_from must be one of {STARTS_FROM}, got {self.starts_from!r}")
        if not self.betas or any(not b > 0 for b in self.betas):
            raise ValueError(f"betas must be positive numbers, got {self.betas}")

    @property
    def registry(self) -> bool:
        return self.rule == "dpo"


@dataclass(frozen=True)
class GridPoint:
    """One trained policy of the study."""

    variant: str
    beta: float
    seed: int
    loss: str  # the registry loss, or the rule of a rule variant (kto, orpo, ...)
    loss_params: Mapping[str, Any]  # the loss's parameters, or the rule variant's settings
    rule: str = "dpo"  # the rule that trains this policy
    starts_from: str = "sft"  # the model training starts from: sft, or base (SFT skipped)

    @property
    def skipped_sft(self) -> bool:
        return self.starts_from != "sft"

    @property
    def path(self) -> str:
        return f"variant~{self.variant}/beta~{format_value(self.beta)}/seed~{self.seed}"


@dataclass(frozen=True)
class Study:
    """A checked study config: its grid, variants and judges, and the resolved config."""

    name: str = field(metadata={"help": "results go to results/<name>/; the MLflow experiment's default name"})
    config: Mapping[str, Any] = field(
        metadata={"help": "the resolved config, read-only: schema defaults filled in, variants' defaults explicit"}
    )
    variants: Mapping[str, Variant] = field(metadata={"help": "every variant the config defines, in config order"})
    grid_variants: tuple[str, ...] = field(metadata={"help": "the variants trained, in grid order"})
    seeds: tuple[int, ...] = field(metadata={"help": "the grid's seeds"})
    data: DataConfig = field(metadata={"help": "the data stage's settings (data:)"})
    judge: JudgeConfig = field(metadata={"help": "the gold judge's training (judge:)"})
    sft: SFTSettings = field(metadata={"help": "SFT's settings (sft:)"})
    sft_data: SFTDataSettings = field(metadata={"help": "what SFT trains on (sft.data, sft.dataset)"})
    reward_model: RewardModelSettings = field(metadata={"help": "a reward model trained in the study (reward_model:)"})
    dpo: DPOSettings = field(metadata={"help": "preference training's settings (dpo:), shared by every variant"})
    pairs: PairsSettings = field(metadata={"help": "how the miniature makes its pairs (pairs:)"})
    generation: GenerationSettings = field(metadata={"help": "how policies answer the test prompts (generation:)"})
    evaluation: EvaluationSettings = field(metadata={"help": "intervals and the LC win rate (evaluation:)"})
    mlflow: MlflowSettings = field(metadata={"help": "where the runs go (mlflow:)"})
    training: TrainingSettings = field(
        metadata={"help": "how training jobs run: precision, load dtype, recomputation (training:)"}
    )
    distributed: DistributedSettings = field(
        metadata={"help": "processes per training job, GPUs per vLLM engine (distributed:)"}
    )
    peft: PeftSettings | None = field(default=None, metadata={"help": "LoRA adapters (peft:); None: full fine-tuning"})

    def __post_init__(self):
        unknown = [v for v in self.grid_variants if v not in self.variants]
        if unknown:
            raise ValueError(f"grid variants {unknown} are not defined")

    # ---- the grid ---------------------------------------------------------------------------
    @functools.cached_property
    def points(self) -> tuple[GridPoint, ...]:
        return tuple(
            GridPoint(v.name, beta, seed, v.loss, v.params, v.rule, v.starts_from)
            for v in (self.variants[name] for name in self.grid_variants)
            for beta in v.betas
            for seed in self.seeds
        )

    @functools.cached_property
    def _points_by_key(self) -> dict[tuple[str, str, int], GridPoint]:
        return {(p.variant, format_value(p.beta), p.seed): p for p in self.points}

    def point(self, variant: str, beta: str | float, seed: str | int, step: str | int | None = None) -> GridPoint:
        """The grid point of a path's wildcards (beta and seed as written in paths, or numbers);
        `step`, from a checkpoint policy's id, names one of the point's checkpoints (checked)."""
        if step is not None and int(step) not in self.evaluation.checkpoints:
            raise KeyError(f"step {step} is not in evaluation.checkpoints {list(self.evaluation.checkpoints)}")
        key = (variant, format_value(float(beta)), int(seed))
        try:
            return self._points_by_key[key]
        except KeyError:
            raise KeyError(f"no grid point variant={variant} beta={beta} seed={seed}") from None

    @property
    def policies(self) -> list[str]:
        """Policy ids as used in paths: `sft` and one `variant~v/beta~b/seed~s` per grid point."""
        return ["sft"] + [p.path for p in self.points]

    @property
    def checkpoint_policies(self) -> list[str]:
        """A policy id per checkpoint (`variant~v/beta~b/seed~s/step~n`, evaluation.checkpoints) of
        each grid point whose rule saves checkpoints: sampled and evaluated like a policy, kept out
        of the pairwise judges, win rates and summary rows (checkpoints.csv has them)."""
        return [policy for point in self.points for policy in self.checkpoints_of(point)]

    def checkpoint_steps(self, variant: str) -> tuple[int, ...]:
        """The steps at which a variant's policies are saved: evaluation.checkpoints if its rule saves
        checkpoints, else none."""
        return self.evaluation.checkpoints if self.variants[variant].checkpointed else ()

    def checkpoints_of(self, point: GridPoint) -> list[str]:
        """The checkpoint policy ids of one grid point."""
        return [f"{point.path}/step~{step}" for step in self.checkpoint_steps(point.variant)]

    @property
    def evaluated_policies(self) -> list[str]:
        """Every policy the generate and evaluate rules serve: the final ones and their checkpoints."""
        return self.policies + self.checkpoint_policies

    def trained_steps(self, variant: str) -> int:
        """The steps a variant's policies train for (dpo.max_steps, or its `train:` override)."""
        return self.train_settings(variant).max_steps

    @property
    def betas(self) -> list[float]:
        """Every beta of a grid variant, once each, in grid order."""
        return list(dict.fromkeys(b for name in self.grid_variants for b in self.variants[name].betas))

    @property
    def temperatures(self) -> tuple[float, ...]:
        """Sampling temperatures of generation."""
        return self.generation.temperatures

    @property
    def temperature_labels(self) -> list[str]:
        return [format_value(float(t)) for t in self.temperatures]

    @property
    def registry_variants(self) -> list[str]:
        """Grid variants trained by the `dpo` rule (a loss from the registry)."""
        return [v for v in self.grid_variants if self.variants[v].registry]

    @property
    def variant_rules(self) -> dict[str, list[str]]:
        """Rule of each rule-based grid variant -> its variants, e.g. {"kto": ["kto", "kto_one"]}."""
        rules: dict[str, list[str]] = {}
        for v in self.grid_variants:
            if not self.variants[v].registry:
                rules.setdefault(self.variants[v].rule, []).append(v)
        return rules

    # ---- data ---------------------------------------------------------------------------------
    @property
    def preferences(self) -> bool:
        """A study on a preference dataset (data.source: preferences): its pairs come from the data,
        so there is no pairs stage and no IMDb gold classifier."""
        return self.data.preferences

    @property
    def sft_skipped(self) -> bool:
        """sft.data: none: the base model is the reference and where every policy starts."""
        return self.sft_data.skipped

    @property
    def sft_source(self) -> str:
        """What SFT trains on: reviews (the IMDb miniature), chosen, dataset or none."""
        if not self.preferences:
            return "reviews"
        return self.sft_data.data or "chosen"

    # ---- judges -----------------------------------------------------------------------------
    @property
    def pairwise_judges(self) -> list[str]:
        return [name for name, spec in self.config["judges"].items() if spec["kind"] in PAIRWISE_KINDS]

    @property
    def pointwise_judges(self) -> list[str]:
        return [name for name, spec in self.config["judges"].items() if spec["kind"] not in PAIRWISE_KINDS]

    @property
    def study_reward_judges(self) -> list[str]:
        """Judges that are the reward model trained in the study (kind reward_model, source study)."""
        return [
            name
            for name, spec in self.config["judges"].items()
            if spec["kind"] == "reward_model" and spec.get("source") == "study"
        ]

    @property
    def trains_reward_model(self) -> bool:
        return bool(self.study_reward_judges)

    @property
    def reward_judge(self) -> str:
        """The judge whose score is a policy's `reward` (mean and CI in the summary, the reward-vs-KL
        frontier): the gold classifier in the IMDb miniature, else the score judge."""
        return "gold" if not self.preferences and "gold" in self.config["judges"] else self.score_judge

    @property
    def score_judge(self) -> str:
        """The judge of the score-vs-length plot: the primary judge if it is pointwise, else the
        first pointwise judge (the config check makes sure there is one)."""
        primary = self.evaluation.primary_judge
        return primary if primary in self.pointwise_judges else self.pointwise_judges[0]

    # ---- generation engines ---------------------------------------------------------------------
    @property
    def shared_engine(self) -> bool:
        """LoRA policies on the SFT model are generated by shared vLLM engines (one per batch):
        generation.lora_serving shared, or auto on cuda (on the CPU, vLLM's LoRA kernels cost more
        than the engine starts they save)."""
        serving = self.generation.lora_serving
        shared = serving == "shared" or (serving == "auto" and self.device == "cuda")
        return self.peft is not None and self.generation.engine == "vllm" and shared

    @property
    def adapter_batches(self) -> list[list[str]]:
        """The LoRA policies each shared engine serves (generation.adapters_per_engine a batch):
        those trained on the SFT model (a policy from the base model has another base)."""
        if not self.shared_engine:
            return []
        on_sft = [point for point in self.points if point.starts_from == "sft"]
        policies = [point.path for point in on_sft] + [
            policy for point in on_sft for policy in self.checkpoints_of(point)
        ]
        size = self.generation.adapters_per_engine
        return [policies[i : i + size] for i in range(0, len(policies), size)]

    # ---- sections, as plain dicts for the stage settings classes ------------------------------
    @property
    def device(self) -> str:
        return self.config["device"]

    @property
    def results_dir(self) -> str:
        return f"results/{self.name}"

    def section(self, name: str) -> dict:
        """A writable copy of one config section, as logged with a job's run."""
        return thaw(self.config[name])

    def train_section(self, variant: str) -> dict:
        """The dpo: section with a rule variant's `train:` overrides applied."""
        return {**self.section("dpo"), **thaw(self.variants[variant].params.get("train", {}))}

    def train_settings(self, variant: str) -> DPOSettings:
        """A variant's training settings: the dpo: section with its `train:` overrides."""
        return DPOSettings(**self.train_section(variant))

    def to_dict(self) -> dict:
        """The resolved config as plain dicts and lists (resolved_config.yaml, job.json)."""
        return thaw(self.config)


def config_hash(config: Mapping) -> str:
    return hashlib.sha256(json.dumps(thaw(config), sort_keys=True, default=str).encode()).hexdigest()[:12]
