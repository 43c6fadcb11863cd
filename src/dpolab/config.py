"""Study config: schema validation (defaults from the schema) and the cross-key checks
JSON Schema cannot express. Runs in the Snakefile before any job, and in tests."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import yaml
from snakemake.utils import validate

from dpolab import losses
from dpolab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


def format_value(value) -> str:
    """How a grid value is written in paths and names: shortest round-tripping form."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _schema_error(error) -> ConfigError:
    path = ".".join(str(p) for p in error.absolute_path) or "<config>"
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        key = f"{path}.{missing}" if path != "<config>" else missing
        return ConfigError(f"{key}: required key is missing")
    return ConfigError(f"{path}: {error.message}")


def validate_config(config: dict) -> dict:
    """Fill defaults from the schema, validate, then run the cross-key checks. In place."""
    import jsonschema

    try:
        validate(config, str(SCHEMA), set_default=True)
    except Exception as exc:  # snakemake wraps the jsonschema error in a WorkflowError
        cause = exc
        while cause is not None and not isinstance(cause, jsonschema.ValidationError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise ConfigError(f"<config>: {exc}") from exc
        raise _schema_error(cause) from None
    check_study_config(config)
    return config


def check_study_config(config: dict) -> None:
    """Cross-key checks: grid variants are defined, their losses exist and their
    parameters are in range, the model source has what it needs."""
    variants = config["variants"]
    for name, spec in variants.items():
        check_variant(config, name, spec)
    for index, name in enumerate(config["grid"]["variants"]):
        if name not in variants:
            raise ConfigError(
                f"grid.variants[{index}]: unknown variant {name!r}; defined in variants: {', '.join(sorted(variants))}"
            )
    model = config["model"]
    if model["source"] in ("local", "hub") and not model.get("path"):
        raise ConfigError(f"model.path: required when model.source is {model['source']!r}")
    if model["source"] == "local" and not Path(model["path"]).is_dir():
        raise ConfigError(f"model.path: {model['path']!r} is not a folder (model.source is 'local')")
    if model["source"] == "scratch":
        scratch = model["scratch"]
        if scratch["hidden_size"] % scratch["num_attention_heads"]:
            raise ConfigError("model.scratch.hidden_size: must be divisible by num_attention_heads")
    check_judges(config)
    data = config["data"]
    if data["prompt_min_tokens"] > data["prompt_max_tokens"]:
        raise ConfigError("data.prompt_min_tokens: must be <= data.prompt_max_tokens")


def check_variant(config: dict, name: str, spec: dict) -> dict:
    """A variant is either a registry loss (`loss:`, trained by the `dpo` rule) or a rule file
    (`rule:`, workflow/rules/variants/<rule>.smk). Fills `starts_from`; returns the checked
    parameters (a loss's merged with its defaults, a rule variant's from its settings class)."""
    where = f"variants.{name}"
    if ("loss" in spec) == ("rule" in spec):
        raise ConfigError(f"{where}: give exactly one of `loss` (a loss in dpolab.losses, trained by the dpo rule) "
                          "or `rule` (a rule file workflow/rules/variants/<rule>.smk)")
    if "loss" in spec:
        if spec.setdefault("starts_from", "sft") != "sft":
            raise ConfigError(f"{where}.starts_from: a registry-loss variant trains the SFT model against the SFT "
                              "reference log-probs; only 'sft' is possible (a rule variant may start from 'base')")
        return losses.check_params(spec["loss"], loss_params(spec), where=where)
    from dpolab.variants import check_rule_variant

    params = check_rule_variant(spec["rule"], loss_params(spec), where=where, dpo_section=config["dpo"])
    spec.update(params)  # the rule's defaults (ORPO: starts_from base) made explicit in the resolved config
    return params


def check_judges(config: dict) -> None:
    from dpolab.judges import DEFAULT_PAIRWISE_TEMPLATE, check_template

    judges = config["judges"]
    for name, spec in judges.items():
        where, kind = f"judges.{name}", spec["kind"]
        if kind in ("reward_model", "llm_pairwise"):
            if spec["source"] == "base":
                if kind == "reward_model":
                    raise ConfigError(f"{where}.source: a reward model needs a local folder or hub id, not the base model")
            elif not spec.get("path"):
                raise ConfigError(f"{where}.path: required when {where}.source is {spec['source']!r}")
            elif spec["source"] == "local" and not Path(spec["path"]).is_dir():
                raise ConfigError(f"{where}.path: {spec['path']!r} is not a folder ({where}.source is 'local')")
        if kind == "llm_pairwise":
            try:
                check_template(spec.get("template") or DEFAULT_PAIRWISE_TEMPLATE, f"{where}.template")
            except ValueError as error:
                raise ConfigError(str(error)) from None
            if len(set(spec["labels"].values())) != 3:
                raise ConfigError(f"{where}.labels: first, second and tie must differ")
    if all(spec["kind"] == "llm_pairwise" for spec in judges.values()):
        raise ConfigError("judges: add at least one pointwise judge (gold, vader or reward_model); the score-length analysis needs scores")
    primary = config["evaluation"]["primary_judge"]
    if primary not in judges:
        raise ConfigError(f"evaluation.primary_judge: {primary!r} is not a judge; judges: {', '.join(judges)}")


def pairwise_judges(config: dict) -> list[str]:
    return [name for name, spec in config["judges"].items() if spec["kind"] == "llm_pairwise"]


def pointwise_judges(config: dict) -> list[str]:
    return [name for name, spec in config["judges"].items() if spec["kind"] != "llm_pairwise"]


def load_config(path: str | Path, overrides: dict | None = None) -> dict:
    """Read a YAML study config, apply overrides, validate (defaults filled in)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    config = yaml.safe_load(path.read_text()) or {}
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: a config must be a mapping")
    config.update(overrides or {})
    return validate_config(config)


@dataclass(frozen=True)
class GridPoint:
    """One trained policy of the study."""

    variant: str
    beta: float
    seed: int
    loss: str  # the registry loss, or the rule of a rule variant (kto, orpo, ...)
    loss_params: dict  # the loss's parameters, or the rule variant's settings
    rule: str = "dpo"  # the rule that trains this policy
    starts_from: str = "sft"  # the model training starts from: sft, or base (SFT skipped)

    @property
    def skipped_sft(self) -> bool:
        return self.starts_from != "sft"

    @property
    def path(self) -> str:
        return f"variant~{self.variant}/beta~{format_value(self.beta)}/seed~{self.seed}"


VARIANT_KEYS = ("loss", "rule", "betas", "starts_from")  # the rest of a variant's entry are its parameters


def loss_params(spec: dict) -> dict:
    return {k: v for k, v in spec.items() if k not in VARIANT_KEYS}


def variant_betas(config: dict, variant: str) -> list[float]:
    """The variant's own `betas` when it sets them (SimPO's beta scales length-normalised
    log-probs, ~20x DPO's), else the grid's."""
    return [float(b) for b in config["variants"][variant].get("betas") or config["grid"]["betas"]]


def all_betas(config: dict) -> list[float]:
    return list(dict.fromkeys(b for v in config["grid"]["variants"] for b in variant_betas(config, v)))


def grid_points(config: dict) -> list[GridPoint]:
    points = []
    for v in config["grid"]["variants"]:
        spec = config["variants"][v]
        params = check_variant(config, v, spec)
        rule = spec.get("rule", "dpo")
        for b in variant_betas(config, v):
            for s in config["grid"]["seeds"]:
                points.append(GridPoint(v, float(b), int(s), spec.get("loss", rule), params, rule, spec["starts_from"]))
    return points


def registry_variants(config: dict) -> list[str]:
    """Grid variants trained by the `dpo` rule (a loss from the registry)."""
    return [v for v in config["grid"]["variants"] if "loss" in config["variants"][v]]


def variant_rules(config: dict) -> dict[str, list[str]]:
    """Rule of each rule-based grid variant -> its variants, e.g. {"kto": ["kto", "kto_one"]}."""
    rules: dict[str, list[str]] = {}
    for v in config["grid"]["variants"]:
        if "rule" in config["variants"][v]:
            rules.setdefault(config["variants"][v]["rule"], []).append(v)
    return rules


def grid_point(config: dict, variant: str, beta: str | float, seed: str | int) -> GridPoint:
    for point in grid_points(config):
        if point.variant == variant and format_value(point.beta) == format_value(float(beta)) and point.seed == int(seed):
            return point
    raise KeyError(f"no grid point variant={variant} beta={beta} seed={seed}")


def parse_policy(policy: str) -> dict[str, str]:
    """`variant~v/beta~b/seed~s` -> {"variant": v, "beta": b, "seed": s}; `sft` -> {}."""
    return {} if policy == "sft" else dict(part.split("~", 1) for part in policy.split("/"))


def policies(config: dict) -> list[str]:
    """Policy ids as used in paths: `sft` and one `variant~v/beta~b/seed~s` per grid point."""
    return ["sft"] + [p.path for p in grid_points(config)]


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]
