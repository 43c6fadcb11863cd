"""Read and check a study config once, into a frozen `dpolab.study.Study`.

The Snakefile calls `load_study` before any job (dry runs included); every check that can be
made from the config, the installed packages and the local files is made here, and each failure
is one `ConfigError` whose message starts with the config key (and names the file where there
is one). The user's dict is never changed: defaults are filled into a copy.

Two layers of checks:
- the config alone (`load_study(..., check_environment=False)`, what each job re-reads): the
  schema (workflow/schemas/config.schema.yaml, which holds the defaults), finite numbers, strict
  integers, grid values that would print alike in paths, variants, judges, templates, URI scheme;
- the machine (`check_environment=True`, the Snakefile's parse on the submitting machine): the
  model package and files, the data's sizes, local data files' columns and labels, the MLflow
  tracking store (a server must answer, a sqlite folder must be writable).

Nothing here imports torch, transformers, vLLM or MLflow: a dry run must stay fast.
"""

from __future__ import annotations

import copy
import functools
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from dpolab import losses
from dpolab.errors import ConfigError
from dpolab.judges import DEFAULT_PAIRWISE_TEMPLATE, check_template
from dpolab.locate import is_hub_id
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
from dpolab.study import PAIRWISE_KINDS, Study, Variant, format_value, freeze, thaw
from dpolab.variants import RULE_VARIANTS, WORKFLOW_RULES, RuleVariant

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
# results/<study>/ is a path, the MLflow experiment and the jobs' names: letters, digits, _ . -
STUDY_NAME_MAX = 64
TRACKING_SCHEMES = ("http://", "https://", "sqlite:///")
VARIANT_KEYS = ("loss", "rule", "betas", "starts_from")  # the rest of a variant's entry are its parameters
_FLOAT = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_INT = re.compile(r"^[+-]?\d+$")


# ---- YAML: duplicate keys refused -------------------------------------------------------------
def check_duplicate_keys(path: str | Path) -> None:
    """PyYAML (and so Snakemake) keeps the last of two equal keys in a mapping without a word:
    a second `dpo:` under `variants:` silently replaces the first. Refuse it, naming the key's
    dotted path and both lines."""
    path = Path(path)
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config file ({error.strerror or error})") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(error)})") from None
    _walk_for_duplicates(root, "", path)


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"{problem}, line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def _walk_for_duplicates(node, where: str, path: Path) -> None:
    if isinstance(node, yaml.MappingNode):
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            dotted = f"{where}.{key}" if where else key
            line = key_node.start_mark.line + 1
            if key in first_line:
                raise ConfigError(
                    f"{dotted}: key {key!r} appears twice in {path} (lines {first_line[key]} and {line}); "
                    "YAML would keep only the second, so remove or rename one"
                )
            first_line[key] = line
            _walk_for_duplicates(value_node, dotted, path)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk_for_duplicates(item, f"{where}.{index}" if where else str(index), path)


def read_yaml(path: str | Path) -> dict:
    """A config file as a dict, duplicate keys refused."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    check_duplicate_keys(path)
    config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys (study:, model:, ...) at the top level")
    return config


def read_study(path: str | Path, overrides: dict | None = None, *, check_environment: bool = True) -> Study:
    """Read a YAML study config, merge `overrides` into it (as `--config` does) and check it."""
    config = read_yaml(path)
    if overrides:
        merge(config, overrides)
    return load_study(config, overrides=overrides, check_environment=check_environment)


def merge(base: dict, update: Mapping) -> dict:
    """Nested merge, as Snakemake merges --configfile files and --config values: mappings merge
    key by key, anything else replaces. In place; returns base."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


# ---- the schema -------------------------------------------------------------------------------
def _schema() -> dict:
    """The schema, read once per check (C loader: ~3 ms where the pure-Python one takes ~25 ms)."""
    return yaml.load(SCHEMA.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@functools.cache
def _validator_class():
    """Draft 2020-12 with two changes: `default`s are filled in (into our copy), and an integer
    is an int (JSON Schema counts 1.0 as an integer, but a seed of 1.0 would be `seed~1.0` in
    one place and `seed~1` in another)."""
    import jsonschema
    from jsonschema import validators

    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool)
    )
    validate_properties = base.VALIDATORS["properties"]

    def properties_with_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, subschema in properties.items():
                if "default" in subschema and key not in instance:
                    instance[key] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(base, {"properties": properties_with_defaults}, type_checker=checker)


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + "...'" + f" ({len(str(value))} characters)"


def _schema_error(error, prefix: str = "") -> ConfigError:
    """One message per jsonschema error, starting with the dotted key."""
    parts = [str(p) for p in error.absolute_path]
    value, kind = error.instance, error.validator
    if "propertyNames" in error.absolute_schema_path:  # a bad name (variants.my-dpo): the error sits on its parent
        parts.append(str(value))
        key = ".".join([prefix] + parts if prefix else parts)
        detail = f"it must match {error.validator_value}" if kind == "pattern" else error.message
        return ConfigError(f"{key}: not a valid name ({detail}); names become folders, rule wildcards and run names")
    key = ".".join([prefix] + parts if prefix else parts) or "<config>"
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return ConfigError(f"{key + '.' if parts or prefix else ''}{missing}: required key is missing")
    if kind == "additionalProperties" and isinstance(value, dict):
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(value) - set(allowed))
        name = f"{key}.{extra[0]}" if key != "<config>" else extra[0]
        return ConfigError(f"{name}: unknown key (allowed here: {', '.join(allowed)})")
    if kind == "maxLength":
        return ConfigError(f"{key}: {_short(value)} is too long: at most {error.validator_value} characters")
    if kind == "pattern" and value == "":
        return ConfigError(f"{key}: must not be empty")
    if kind == "pattern":
        return ConfigError(
            f"{key}: {_short(value)} has characters that are not allowed (pattern {error.validator_value})"
        )
    if kind == "type":
        wanted = error.validator_value if isinstance(error.validator_value, str) else " or ".join(error.validator_value)
        hint = " (write it without a decimal point)" if "integer" in wanted and isinstance(value, float) else ""
        if ("integer" in wanted or "number" in wanted) and isinstance(value, str) and _FLOAT.match(value.strip()):
            text = value.strip()
            if "number" not in wanted and not _INT.match(text):
                hint = " (write a whole number, without a decimal point)"
            elif re.match(r"^[+-]?\d+[eE]", text):  # YAML 1.1 needs a decimal point before an exponent
                fixed = re.sub(r"^([+-]?[0-9]+)", r"\1.0", text)
                hint = f" (YAML reads {text} as text: write {fixed})"
            else:
                hint = " (a string, not a number: remove the quotes)"
        return ConfigError(f"{key}: {_short(value)} is not of type {wanted}{hint}")
    return ConfigError(f"{key}: {error.message if len(error.message) < 300 else error.message[:300] + '...'}")


def _validate(instance: dict, schema: dict, prefix: str = "") -> None:
    from jsonschema.exceptions import best_match

    validator = _validator_class()(schema)
    error = best_match(validator.iter_errors(instance))
    if error is not None:
        raise _schema_error(error, prefix)


# ---- values that JSON Schema lets through -------------------------------------------------------
def _check_finite(value, where: str = "") -> None:
    """NaN passes every `minimum` of JSON Schema (all comparisons with it are false), and
    .inf passes `exclusiveMinimum: 0`; no setting of a study is meaningful at either."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where or '<config>'}: {value} is not a finite number")
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_finite(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_finite(item, f"{where}.{index}")


def _types(schema: Mapping | None) -> set[str]:
    kind = (schema or {}).get("type")
    return {kind} if isinstance(kind, str) else set(kind or ())


def _coerce_string(text: str, types: set[str]):
    """A string from the command line as the type the schema wants, or unchanged."""
    if "string" in types:
        return None if "null" in types and text in ("null", "~") else text
    if "integer" in types and _INT.match(text):
        return int(text)
    if "number" in types and _FLOAT.match(text):
        return float(text)
    if "boolean" in types and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if "null" in types and text in ("null", "~", ""):
        return None
    if types & {"array", "object"}:
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return text
    if not types:  # a key the schema leaves open (a loss's parameters): numbers and booleans
        if _INT.match(text):
            return int(text)
        if _FLOAT.match(text):
            return float(text)
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
    return text


def _subschema(schema: Mapping | None, key) -> Mapping | None:
    if not schema:
        return None
    if "properties" in schema and key in schema["properties"]:
        return schema["properties"][key]
    if isinstance(schema.get("additionalProperties"), Mapping):
        return schema["additionalProperties"]
    if isinstance(schema.get("items"), Mapping):
        return schema["items"]
    return None


def coerce_overrides(config, overrides, schema: Mapping | None):
    """Snakemake reads `--config key=value` values with YAML's base loader, so a nested value
    (`--config 'dpo={max_steps: 5}'`) arrives as strings ('5'). Turn each string that came from
    the command line into the type the schema wants there; values from files are left as they
    are (a quoted '5' in a file is a mistake the schema reports)."""
    if isinstance(overrides, Mapping) and isinstance(config, dict):
        for key, value in overrides.items():
            if key in config:
                config[key] = coerce_overrides(config[key], value, _subschema(schema, key))
        return config
    if isinstance(overrides, (list, tuple)) and isinstance(config, list) and len(config) == len(overrides):
        return [coerce_overrides(c, o, _subschema(schema, 0)) for c, o in zip(config, overrides)]
    if isinstance(config, str) and config == overrides:
        coerced = _coerce_string(config, _types(schema))
        if isinstance(coerced, (dict, list)):
            return coerce_overrides(coerced, coerced, schema)
        return coerced
    return config


# ---- the study --------------------------------------------------------------------------------
def load_study(
    config: Mapping, *, overrides: Mapping | None = None, check_environment: bool = True, workdir: str | Path = "."
) -> Study:
    """Check a config (a dict as read from YAML, or Snakemake's `config`) and return the Study.

    `overrides`: the `--config` values (their strings are read as the schema's types).
    `check_environment`: also check packages, files, data sizes and the tracking store
    (False for a job that re-reads a config its workflow already checked).
    `workdir`: where results/<study>/ is (Snakemake's working directory).
    """
    if not isinstance(config, Mapping):
        raise ConfigError(
            f"<config>: a config must be a mapping of keys (study:, model:, ...), got {type(config).__name__}"
        )
    schema = _schema()
    raw = thaw(config)  # a plain copy (Snakemake hands OrderedDicts and its own Map): never the user's dict
    if overrides:
        coerce_overrides(raw, thaw(overrides), schema)
    _check_finite(raw)
    written = copy.deepcopy(raw)  # what the user wrote, before the schema's defaults fill it in
    _validate(raw, schema)
    variants = {name: resolve_variant(raw, name, dpo_schema=schema["properties"]["dpo"]) for name in raw["variants"]}
    if raw["evaluation"]["primary_judge"] is None:  # the first judge (gold in the IMDb miniature)
        raw["evaluation"]["primary_judge"] = next(iter(raw["judges"]))
    check_study(raw, variants)
    check_data_source(raw, written)
    resolved = dict(raw, variants={name: resolved_entry(raw["variants"][name], v) for name, v in variants.items()})
    study = Study(
        name=raw["study"],
        config=freeze(resolved),
        variants=freeze(variants),
        grid_variants=tuple(raw["grid"]["variants"]),
        seeds=tuple(raw["grid"]["seeds"]),
        **stage_settings(raw),
    )
    if check_environment:
        from dpolab.checks import check_environment as check_machine

        check_machine(study, Path(workdir))
    return study


def stage_settings(config: dict) -> dict:
    """The typed settings of the sections that have them (dpolab.settings), checked by their
    own __post_init__ (messages start with the section's key)."""
    classes = {
        "data": DataConfig,
        "judge": JudgeConfig,
        "dpo": DPOSettings,
        "pairs": PairsSettings,
        "reward_model": RewardModelSettings,
        "generation": GenerationSettings,
        "evaluation": EvaluationSettings,
        "mlflow": MlflowSettings,
    }
    sft_data_keys = ("data", "dataset")  # what SFT trains on; the rest of sft: is how
    try:
        settings = {name: settings(**config[name]) for name, settings in classes.items()}
        settings["sft"] = SFTSettings(**{k: v for k, v in config["sft"].items() if k not in sft_data_keys})
        settings["sft_data"] = SFTDataSettings(**{k: v for k, v in config["sft"].items() if k in sft_data_keys})
        settings["peft"] = PeftSettings(**config["peft"]) if config["peft"] is not None else None
        settings["training"] = TrainingSettings(
            device=config["device"], lora=settings["peft"] is not None, **config["training"]
        )
        settings["distributed"] = DistributedSettings(device=config["device"], **config["distributed"])
        check_parallel_training(config, settings)
        return settings
    except (TypeError, ValueError) as error:
        raise ConfigError(str(error)) from None


def check_parallel_training(config: dict, settings: dict) -> None:
    """Batches that split evenly over the training processes; QLoRA where it can run."""
    distributed, peft = settings["distributed"], settings["peft"]
    sections = ["dpo"] + (["sft"] if config["sft"].get("data") != "none" else [])
    trains_reward_model = any(
        j["kind"] == "reward_model" and j.get("source") == "study" for j in config["judges"].values()
    )
    sections += ["reward_model"] if trains_reward_model else []
    for section in sections:  # the training stages the study has
        distributed.per_device_batch(config[section]["batch_size"], f"{section}.batch_size")
    for name, spec in config["variants"].items():
        train = spec.get("train") or {}
        if isinstance(train, Mapping) and "batch_size" in train:
            distributed.per_device_batch(train["batch_size"], f"variants.{name}.train.batch_size")
    if peft is not None and peft.load_in_4bit:
        if config["device"] != "cuda":
            raise ValueError(
                "peft.load_in_4bit: QLoRA's 4-bit base runs on bitsandbytes' GPU kernels and needs device: cuda; "
                "on the CPU leave it false (LoRA on the full-precision base)"
            )
        if peft.sft == "full" and config["sft"].get("data") != "none":
            raise ValueError(
                "peft.load_in_4bit: a 4-bit model cannot be fully fine-tuned in SFT; set peft.sft: lora "
                "(or sft.data: none for a model that needs no SFT)"
            )


def resolve_variant(config: dict, name: str, *, dpo_schema: dict) -> Variant:
    """A variant entry, checked: either a registry loss (`loss:`, trained by the dpo rule) or a
    rule file (`rule:`, workflow/rules/variants/<rule>.smk)."""
    where, spec = f"variants.{name}", config["variants"][name]
    if ("loss" in spec) == ("rule" in spec):
        raise ConfigError(
            f"{where}: give exactly one of `loss` (a loss in dpolab.losses, trained by the dpo rule) "
            "or `rule` (a rule file workflow/rules/variants/<rule>.smk)"
        )
    params = {k: v for k, v in spec.items() if k not in VARIANT_KEYS}
    betas = tuple(float(b) for b in spec.get("betas") or config["grid"]["betas"])
    betas_key = f"{where}.betas" if spec.get("betas") else "grid.betas"
    check_distinct_in_paths(betas, betas_key, "beta")
    if "loss" in spec:
        starts_from = spec.get("starts_from", "sft")
        if starts_from != "sft":
            raise ConfigError(
                f"{where}.starts_from: a registry-loss variant trains the SFT model against the SFT "
                "reference log-probs; only 'sft' is possible (a rule variant may start from 'base')"
            )
        checked = losses.check_params(spec["loss"], params, where=where)
        return Variant(name, "dpo", spec["loss"], freeze(checked), betas, "sft")
    settings = check_rule_variant(
        spec["rule"],
        {**params, **({"starts_from": spec["starts_from"]} if "starts_from" in spec else {})},
        where=where,
        dpo_section=config["dpo"],
        dpo_schema=dpo_schema,
    )
    # the shipped rule variants save checkpoints (jobs.train_policy); a user's rule file is not asked to
    return Variant(
        name,
        spec["rule"],
        spec["rule"],
        freeze(settings),
        betas,
        settings["starts_from"],
        checkpointed=spec["rule"] in RULE_VARIANTS,
    )


def resolved_entry(spec: dict, variant: Variant) -> dict:
    """A variant's entry in the resolved config: as written, with its defaults made explicit."""
    entry = {
        ("loss" if variant.registry else "rule"): variant.loss,
        **thaw(variant.params),
        "starts_from": variant.starts_from,
    }
    if spec.get("betas"):
        entry["betas"] = list(spec["betas"])
    return entry


def check_rule_variant(rule: str, params: dict, *, where: str, dpo_section: dict, dpo_schema: dict) -> dict:
    """A rule variant's settings, checked and with defaults (dpolab.variants holds the settings
    classes of the shipped ones); errors name the config key."""
    from dataclasses import asdict, fields

    if rule in WORKFLOW_RULES:
        hint = " (a registry loss is `loss: dpo`)" if rule == "dpo" else ""
        raise ConfigError(
            f"{where}.rule: {rule!r} is one of the workflow's own rules; a rule variant needs its own name{hint}"
        )
    settings_class = RULE_VARIANTS.get(rule, RuleVariant)
    known = {f.name for f in fields(settings_class)}
    if rule in RULE_VARIANTS:
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError(
                f"{where}.{unknown[0]}: rule {rule!r} takes no parameter {unknown[0]!r} "
                f"(allowed: {', '.join(sorted(known))})"
            )
    try:
        settings = settings_class(**{k: v for k, v in params.items() if k in known})
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}.{error}") from None
    check_train_overrides(settings.train, dpo_section, where=f"{where}.train", dpo_schema=dpo_schema)
    return {**params, **asdict(settings)}


def check_train_overrides(train: dict, dpo_section: dict, *, where: str, dpo_schema: dict) -> None:
    """`train:` holds keys of the dpo: section, checked against the schema's dpo: section."""
    unknown = sorted(set(train) - set(dpo_section))
    if unknown:
        raise ConfigError(
            f"{where}.{unknown[0]}: not a key of the dpo: section (keys: {', '.join(sorted(dpo_section))})"
        )
    _validate({**dpo_section, **train}, dpo_schema, prefix=where)


def check_distinct_in_paths(values, key: str, name: str) -> None:
    """Grid values become path folders (`beta~0.1`): two that print alike would be one folder."""
    seen: dict[str, Any] = {}
    for value in values:
        label = format_value(float(value))
        if label in seen:
            raise ConfigError(
                f"{key}: {seen[label]!r} and {value!r} are both written {name}~{label} in paths "
                "(6 significant digits); keep one or make them differ more"
            )
        seen[label] = value


def check_study(config: dict, variants: dict[str, Variant]) -> None:
    """Cross-key checks JSON Schema cannot express (the config alone; no files read)."""
    name = config["study"]
    if len(name) > STUDY_NAME_MAX:
        raise ConfigError(
            f"study: {_short(name)} is too long: at most {STUDY_NAME_MAX} characters "
            "(it names a results folder, the MLflow experiment and cluster jobs)"
        )
    for index, variant in enumerate(config["grid"]["variants"]):
        if variant not in variants:
            raise ConfigError(
                f"grid.variants.{index}: unknown variant {variant!r}; defined in variants: "
                f"{', '.join(sorted(variants))}"
            )
    check_distinct_in_paths(config["generation"]["temperatures"], "generation.temperatures", "temp")
    model = config["model"]
    if model["source"] in ("local", "hub") and not model.get("path"):
        raise ConfigError(f"model.path: required when model.source is {model['source']!r}")
    if model["source"] == "hub":
        check_hub_id(model["path"], "model.path")
    if model["source"] == "scratch":
        scratch = model["scratch"]
        if scratch["hidden_size"] % scratch["num_attention_heads"]:
            raise ConfigError(
                "model.scratch.hidden_size: must be divisible by model.scratch.num_attention_heads "
                f"(got {scratch['hidden_size']} and {scratch['num_attention_heads']})"
            )
        head_size = scratch["hidden_size"] // scratch["num_attention_heads"]
        if head_size % 2:  # Llama's rotary position embeddings rotate pairs of dimensions
            raise ConfigError(
                f"model.scratch.hidden_size: the head size hidden_size / num_attention_heads = "
                f"{head_size} must be even (rotary position embeddings); e.g. a multiple of "
                "2 * num_attention_heads"
            )
    data = config["data"]
    if data["prompt_min_tokens"] > data["prompt_max_tokens"]:
        raise ConfigError(
            f"data.prompt_min_tokens: must be <= data.prompt_max_tokens (got {data['prompt_min_tokens']} "
            f"> {data['prompt_max_tokens']})"
        )
    if data["eval_fraction"] + data["test_fraction"] >= 1:
        raise ConfigError("data.test_fraction: data.eval_fraction + data.test_fraction must be below 1")
    check_judges(config)
    check_tracking_scheme(config["mlflow"]["tracking_uri"])
    check_checkpoints(config, variants)


def check_checkpoints(config: dict, variants: dict[str, Variant]) -> None:
    """Every checkpoint step comes before the end of each checkpointed variant's training (the
    last step is the policy itself)."""
    steps = config["evaluation"]["checkpoints"]
    if not steps:
        return
    for name in dict.fromkeys(config["grid"]["variants"]):
        if not variants[name].checkpointed:
            continue
        overrides = variants[name].params.get("train") or {}
        train = {**config["dpo"], **overrides}
        late = [step for step in steps if step >= train["max_steps"]]
        if late:
            where = f"variants.{name}.train.max_steps" if "max_steps" in overrides else "dpo.max_steps"
            raise ConfigError(
                f"evaluation.checkpoints: step {late[0]} is not before the end of variant {name}'s training "
                f"({where}: {train['max_steps']}); the last step is the policy itself, give earlier steps"
            )


def check_hub_id(repo_id: str, where: str) -> None:
    """huggingface_hub would otherwise refuse the id inside the resource sizing, with its own error."""
    if not is_hub_id(repo_id):
        raise ConfigError(
            f"{where}: {_short(repo_id)} is not a Hugging Face Hub id (owner/name: letters, digits, "
            "- _ . and one slash, at most 96 characters a part); a local folder needs source: local"
        )


def check_judges(config: dict) -> None:
    judges = config["judges"]
    for name, spec in judges.items():
        where, kind = f"judges.{name}", spec["kind"]
        if kind in ("reward_model", "llm_pairwise"):
            if spec["source"] == "base":
                if kind == "reward_model":
                    raise ConfigError(
                        f"{where}.source: a reward model needs a local folder or hub id, not the base model"
                    )
            elif spec["source"] == "study":
                if kind != "reward_model":
                    raise ConfigError(
                        f"{where}.source: 'study' is a reward model trained in the study (kind: reward_model)"
                    )
                if spec.get("path"):
                    raise ConfigError(
                        f"{where}.path: a reward model trained in the study (source: study) has no path; "
                        "remove it, or set source: local for your own model"
                    )
            elif not spec.get("path"):
                raise ConfigError(f"{where}.path: required when {where}.source is {spec['source']!r}")
            elif spec["source"] == "hub":
                check_hub_id(spec["path"], f"{where}.path")
        if kind == "llm_http":
            check_http_judge(spec, where)
        if kind in ("llm_pairwise", "llm_http"):
            check_template(spec.get("template") or DEFAULT_PAIRWISE_TEMPLATE, f"{where}.template")
            labels = spec["labels"]
            for label, text in labels.items():
                if not text.strip():
                    raise ConfigError(f"{where}.labels.{label}: must not be empty")
            if len({text.strip() for text in labels.values()}) != 3:
                raise ConfigError(f"{where}.labels: first, second and tie must differ (got {dict(labels)})")
    if all(spec["kind"] in PAIRWISE_KINDS for spec in judges.values()):
        raise ConfigError(
            "judges: add at least one pointwise judge (gold, vader or reward_model); "
            "the score-length analysis needs scores"
        )
    primary = config["evaluation"]["primary_judge"]
    if primary not in judges:
        raise ConfigError(f"evaluation.primary_judge: {primary!r} is not a judge; judges: {', '.join(judges)}")


def check_http_judge(spec: Mapping, where: str) -> None:
    """An OpenAI-compatible endpoint: an http(s) base URL without credentials, and a model name."""
    url = spec.get("base_url")
    if not url:
        raise ConfigError(f"{where}.base_url: required for kind llm_http (e.g. http://127.0.0.1:8000/v1)")
    check_http_url(
        url,
        f"{where}.base_url",
        no_host="is not an http(s) URL with a host (e.g. http://127.0.0.1:8000/v1)",
        credentials=f"do not put credentials in the URL (they would be logged); name the environment "
        f"variable that holds the API key in {where}.api_key_env",
    )
    if not spec.get("model"):
        raise ConfigError(f"{where}.model: required for kind llm_http (the model name the endpoint serves)")


# Keys of the llm_http kind alone (refused on other kinds when set).
HTTP_ONLY_KEYS = ("base_url", "model", "api_key_env", "system_prompt", "max_concurrency", "max_retries", "timeout")
# data: keys of each source; a key of the other source, when written, is refused by name
IMDB_DATA_KEYS = (
    "eval_fraction",
    "n_train_prompts",
    "n_test_prompts",
    "prompt_min_tokens",
    "prompt_max_tokens",
    "n_sft_texts",
    "sft_max_words",
)
PREFERENCE_DATA_KEYS = (
    "path",
    "revision",
    "train_split",
    "test_split",
    "columns",
    "n_train",
    "n_test",
    "max_prompt_length",
    "max_length",
    "reward_fraction",
)


def _defaults(schema: Mapping) -> Any:
    """The value the schema's defaults give a section (or key) the user left out."""
    if "properties" in schema:
        return {k: _defaults(v) for k, v in schema["properties"].items() if "default" in v or "properties" in v}
    return schema.get("default")


def _set(written: Mapping, key: str, schema: Mapping) -> bool:
    """Whether `key` was written with a value other than its default. A job re-reads the resolved
    config, where every default is written out: those must not count as the user's choice."""
    if key not in written:
        return False
    default = _defaults(schema)
    value = written[key]
    if isinstance(value, Mapping) and isinstance(default, Mapping):
        return any(_set(value, k, schema["properties"][k]) for k in value if k in schema.get("properties", {}))
    return value != default


def check_data_source(config: dict, written: Mapping) -> None:
    """The keys of the data source in use (a key of the other source is a mistake worth naming),
    what SFT trains on, and which judges fit the source. `written`: the config before defaults."""
    properties = _schema()["properties"]
    data, data_written = config["data"], written.get("data") or {}
    preferences = data["source"] == "preferences"
    foreign = [
        k
        for k in (IMDB_DATA_KEYS if preferences else PREFERENCE_DATA_KEYS)
        if _set(data_written, k, properties["data"]["properties"][k])
    ]
    if foreign:
        other = "movie_reviews" if preferences else "preferences"
        raise ConfigError(f"data.{foreign[0]}: applies to data.source {other}, not {data['source']}")
    sft_data = config["sft"]["data"]
    judges = config["judges"]
    judge_schema = properties["judges"]["additionalProperties"]
    for name, spec in (written.get("judges") or {}).items():
        kind = judges[name]["kind"]
        if kind != "llm_http" and isinstance(spec, Mapping):
            foreign = [k for k in HTTP_ONLY_KEYS if _set(spec, k, judge_schema["properties"][k])]
            if foreign:
                raise ConfigError(f"judges.{name}.{foreign[0]}: applies to judges of kind llm_http, not {kind}")
    if not preferences:
        if _set(written, "reward_model", properties["reward_model"]):
            raise ConfigError(
                "reward_model: trains a reward model on a preference dataset; it applies to data.source preferences"
            )
        if sft_data is not None or _set(
            written.get("sft") or {}, "dataset", properties["sft"]["properties"]["dataset"]
        ):
            key = "sft.data" if sft_data is not None else "sft.dataset"
            raise ConfigError(
                f"{key}: applies to data.source preferences; the IMDb miniature's SFT trains on review "
                "openings (leave it out)"
            )
        for name, spec in judges.items():
            if spec["kind"] == "reward_model" and spec["source"] == "study":
                raise ConfigError(
                    f"judges.{name}.source: a reward model trained in the study needs preference pairs "
                    "(data.source: preferences); the IMDb miniature's gold judge is kind: gold"
                )
        return
    if not data["path"]:
        raise ConfigError(
            "data.path: required when data.source is preferences (a .jsonl/.json/.parquet/.csv file, "
            "a save_to_disk folder or a Hub dataset id)"
        )
    check_dataset_path(data["path"], "data.path")
    for section in ("pairs", "judge"):
        if _set(written, section, properties[section]):
            what = "makes pairs from SFT samples" if section == "pairs" else "trains the IMDb gold classifier"
            raise ConfigError(
                f"{section}: {what}, which a preference study does not do (its pairs come from "
                "data.path); remove the section"
            )
    for name, spec in judges.items():
        if spec["kind"] in ("gold", "vader"):
            default = "" if "judges" in written else " (the default judges)"
            raise ConfigError(
                f"judges.{name}.kind: {spec['kind']}{default} judges IMDb sentiment (data.source "
                "movie_reviews); a preference study uses reward_model (e.g. source: study), "
                "llm_pairwise or llm_http judges"
            )
    if sft_data == "dataset":
        dataset = config["sft"]["dataset"]
        if not dataset.get("path"):
            raise ConfigError(
                "sft.dataset.path: required when sft.data is dataset (a file, save_to_disk folder or "
                "Hub id with a messages column or prompt and completion columns)"
            )
        check_dataset_path(dataset["path"], "sft.dataset.path")
    elif _set(written.get("sft") or {}, "dataset", properties["sft"]["properties"]["dataset"]):
        raise ConfigError(f"sft.dataset: applies when sft.data is dataset (it is {sft_data or 'chosen'!r})")


def check_dataset_path(path: str, where: str) -> None:
    """A local file or folder (checked against the machine later), or a valid Hub dataset id."""
    from dpolab.preference_data import FILE_SUFFIXES

    local = Path(path).expanduser()
    if local.suffix in FILE_SUFFIXES or local.is_absolute() or path.startswith((".", "~")) or local.exists():
        return
    if not is_hub_id(path):
        raise ConfigError(
            f"{where}: {_short(path)} is neither a data file ({', '.join(FILE_SUFFIXES)}), an existing "
            "folder, nor a Hugging Face Hub dataset id (owner/name)"
        )


def check_tracking_scheme(uri: str | None) -> None:
    """MLflow stores dpolab can check and use: a tracking server over HTTP(S), or a sqlite file."""
    if uri is None:
        return
    if not uri.startswith(TRACKING_SCHEMES) or uri in TRACKING_SCHEMES:
        raise ConfigError(
            f"mlflow.tracking_uri: {_short(uri)} is not supported; use an MLflow tracking server "
            "(http://host:port or https://...) or a sqlite file (sqlite:////absolute/path/mlflow.db), "
            "or leave it null for results/<study>/mlflow.db"
        )
    if uri.startswith(("http://", "https://")):
        check_http_url(
            uri,
            "mlflow.tracking_uri",
            no_host="names no host",
            credentials="do not put credentials in the URI (they would be logged and stored with the "
            "config); set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD in the "
            "environment instead",
        )


def check_http_url(url: str, key: str, *, no_host: str, credentials: str) -> None:
    """An http(s) URL with a host and no credentials in it; messages start with `key`."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a port that is not a number)
    except ValueError as error:
        raise ConfigError(f"{key}: {_short(url)} is not a valid URL ({error})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{key}: {_short(url)} {no_host}")
    if parts.username or parts.password:
        raise ConfigError(f"{key}: {credentials}")


def main(argv: list[str] | None = None) -> int:
    """`python -m dpolab.config CONFIG [CONFIG ...]`: check config files as the workflow will,
    merged in order as Snakemake merges --configfile files, with the file named in every message
    (Snakemake itself reads --configfile before the workflow and does not name a broken file)."""
    import sys

    paths = list(sys.argv[1:] if argv is None else argv)
    if not paths:
        print("usage: python -m dpolab.config CONFIG [CONFIG ...]", file=sys.stderr)
        return 2
    try:
        config: dict = {}
        for path in paths:
            merge(config, read_yaml(path))
        study = load_study(config)
    except ConfigError as error:
        print(f"invalid config: {error}", file=sys.stderr)
        return 2
    print(
        f"config OK: study {study.name}, {len(study.points)} trained policies, "
        f"{len(study.temperatures)} temperature(s), judges {', '.join(study.config['judges'])}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
