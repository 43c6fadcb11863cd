"""Variants trained by their own rule files (workflow/rules/variants/<rule>.smk) instead of by
the `dpo` rule's loss registry: KTO learns from unpaired feedback with TRL's KTOTrainer, ORPO
folds SFT into the preference loss with TRL's ORPOTrainer and needs no reference model.

A config entry names the rule (`kto: {rule: kto, desirable_weight: 1.0}`); its other keys are
the rule's settings, checked by dpolab.config while the config is read, before any job. A rule file that
dpolab does not ship (a user's own) gets the generic settings (`starts_from`, `train`) and
passes its other keys through to its job unchecked: its rule file checks them itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dpolab.study import STARTS_FROM

# The workflow's own rules: a rule variant needs a rule name of its own.
WORKFLOW_RULES = frozenset(
    {
        "all",
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
    }
)


@dataclass
class RuleVariant:
    """Settings every rule variant has."""

    starts_from: str = field(
        default="sft",
        metadata={"help": "the model training starts from: 'sft' (the study's SFT model) or 'base' (SFT skipped)"},
    )
    train: dict = field(
        default_factory=dict,
        metadata={"help": "this variant's values for keys of the dpo: section (max_steps, learning_rate, ...)"},
    )

    def __post_init__(self):
        if self.starts_from not in STARTS_FROM:
            raise ValueError(f"starts_from: must be one of {', '.join(STARTS_FROM)}, got {self.starts_from!r}")
        if not isinstance(self.train, dict):
            raise ValueError(f"train: must be a mapping of dpo: keys, got {self.train!r}")


def _positive(name: str, value) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name}: must be a positive number, got {value!r}")


@dataclass
class KTOVariant(RuleVariant):
    """KTO (Ethayarajh et al. 2024) with TRL's KTOTrainer; beta comes from the grid."""

    desirable_weight: float = field(default=1.0, metadata={"help": "lambda_D: weight of the desirable examples' loss"})
    undesirable_weight: float = field(
        default=1.0, metadata={"help": "lambda_U: weight of the undesirable examples' loss"}
    )
    examples_per_pair: str = field(
        default="both",
        metadata={
            "help": "from the study's pairs: 'both' (chosen -> desirable, rejected -> undesirable) or 'one' "
            "(one of the two per pair, at random: no prompt has both, KTO's one-y-per-x setting)"
        },
    )
    unpaired_data: str | None = field(
        default=None,
        metadata={
            "help": "take unpaired examples from here instead of the pairs: a local .parquet/.jsonl/.csv "
            "file or a Hugging Face Hub dataset id, with columns prompt, completion, label (bool)"
        },
    )
    unpaired_split: str = field(default="train", metadata={"help": "split of a Hub dataset in unpaired_data"})
    unpair_seed: int = field(default=0, metadata={"help": "seed of the random half with examples_per_pair: one"})

    def __post_init__(self):
        super().__post_init__()
        _positive("desirable_weight", self.desirable_weight)
        _positive("undesirable_weight", self.undesirable_weight)
        if self.examples_per_pair not in ("both", "one"):
            raise ValueError(f"examples_per_pair: must be 'both' or 'one', got {self.examples_per_pair!r}")
        # the file itself (columns, labels) is read by the machine checks (dpolab.checks)
        if self.unpaired_data is not None and (not isinstance(self.unpaired_data, str) or not self.unpaired_data):
            raise ValueError(f"unpaired_data: must be a file path or a Hub dataset id, got {self.unpaired_data!r}")
        if not isinstance(self.unpaired_split, str) or not self.unpaired_split:
            raise ValueError(f"unpaired_split: must be a split name, got {self.unpaired_split!r}")
        if not isinstance(self.unpair_seed, int) or isinstance(self.unpair_seed, bool):
            raise ValueError(f"unpair_seed: must be an integer, got {self.unpair_seed!r}")


@dataclass
class ORPOVariant(RuleVariant):
    """ORPO (Hong et al. 2024) with TRL's ORPOTrainer: NLL on the chosen response plus
    beta (the paper's lambda) times the odds-ratio loss; from the base model, as the paper."""

    starts_from: str = field(
        default="base", metadata={"help": "ORPO replaces SFT: the paper starts from the base model"}
    )


RULE_VARIANTS: dict[str, type[RuleVariant]] = {"kto": KTOVariant, "orpo": ORPOVariant}
