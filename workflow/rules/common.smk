# Helpers shared by the rule files (the checked study, wildcard constraints, resources, targets);
# the rule files hold rules only.
import re

from pathlib import Path

from dpolab.config import check_duplicate_keys, load_study
from dpolab.errors import ConfigError
from dpolab.plan import shared_engine_resources as shared_engine_resources_of
from dpolab.resources import job_resources, model_params
from dpolab.study import format_value, parse_policy

try:
    # One check of the config, before any job and on dry runs too: schema (with its defaults),
    # cross-key checks, and (on the submitting machine) model, data, files and tracking store.
    # A cluster job re-parses this file: the config alone is checked again there, not the machine.
    for config_file in workflow.configfiles:
        check_duplicate_keys(config_file)
    # overrides: the --config values alone, whose strings are read as the schema's types (Snakemake's
    # overwrite_config also holds the --configfile files' contents, where a string stays a string).
    study = load_study(config, overrides=workflow.config_settings.config, check_environment=not workflow.remote_exec)
except ConfigError as error:
    raise WorkflowError(f"invalid config: {error}") from None
# Jobs read the resolved config (defaults filled in, --config strings typed) as `snakemake.config`.
config.clear()
config.update(study.to_dict())

STUDY = study.results_dir
POLICIES = study.policies
# evaluation.checkpoints: each policy's checkpoints go through generate and evaluate as policies of
# their own (`variant~v/beta~b/seed~s/step~n`); the pairwise judges, win rates and summary rows see
# the final policies only (POLICIES).
CHECKPOINT_POLICIES = study.checkpoint_policies
EVALUATED_POLICIES = study.evaluated_policies
TEMPERATURES = study.temperature_labels
DEVICE = study.device
POLICY_TEMPERATURES = [(p, t) for p in POLICIES for t in TEMPERATURES]  # explicit order for study-wide rules
PAIRWISE_JUDGES = study.pairwise_judges
SCORE_JUDGE = study.score_judge  # the score-vs-length scatter needs a pointwise judge
# The reference model and the start of every policy: the SFT model, or the base model itself when
# a preference study skips SFT (sft.data: none, e.g. an instruct model that is already tuned).
SFT_MODEL = f"{STUDY}/base/model" if study.sft_skipped else f"{STUDY}/sft/model"
REWARD_MODEL_DIR = f"{STUDY}/reward_model/model"  # a reward model trained in the study (judges with source: study)


def _one_of(values):
    values = list(values)
    return "|".join(re.escape(str(v)) for v in values) if values else "(?!)"  # (?!): matches nothing


wildcard_constraints:
    variant=_one_of(study.grid_variants),
    beta=_one_of(format_value(b) for b in study.betas),
    seed=_one_of(study.seeds),
    policy=_one_of(EVALUATED_POLICIES),
    temperature=_one_of(TEMPERATURES),
    judge=_one_of(study.config["judges"]),


# Threads of a cluster job when the profile does not set them (set-threads): a job owns its
# allocation there, so it is not sized from the submitting machine's --cores.
CLUSTER_THREADS = 8


def local_cores():
    """--cores of a local run; None on a cluster. The head of a cluster run has no --cores, and
    each cluster job re-parses this file (exec mode remote) and must size threads as the head did."""
    if workflow.remote_exec:
        return None
    try:
        return workflow.cores
    except WorkflowError:
        return None


def stage_threads():
    """A stage that runs alone in the DAG (sft, pairs) takes every core (max 8)."""
    cores = local_cores()
    return CLUSTER_THREADS if cores is None else max(1, min(cores, 8))


def heavy_threads():
    """Grid jobs (dpo, generate) take half the cores (at least 1, at most 8) so two run
    side by side: per-job start-up (imports, engine set-up) is single-threaded, and on small
    machines one thread per job is the steady setting. Profiles may override (set-threads)."""
    cores = local_cores()
    return CLUSTER_THREADS if cores is None else max(1, min(cores // 2, 8))


try:
    MODEL_PARAMS = model_params(study.config["model"])
except ConfigError as error:  # e.g. a local model folder without config.json
    raise WorkflowError(f"invalid config: {error}") from None
if MODEL_PARAMS is None:
    if local_cores() is None:  # resources decide placement only on a cluster
        raise WorkflowError(
            f"model.n_params: needed to size cluster jobs (mem_mb, runtime) for Hub model "
            f"{study.config['model']['path']!r}, whose config.json is not in the local Hugging Face cache; "
            "set it in the config (e.g. n_params: 2.8e+9)"
        )
    MODEL_PARAMS = 1_000_000_000


def resources_for(stage):
    """Generic resources of a stage's jobs (mem_mb, runtime in minutes, gpu on cuda), from the
    config (dpolab.resources); a profile's set-resources overrides them."""
    return job_resources(stage, study, MODEL_PARAMS)


# ---- variants: the dpo rule trains registry losses; a rule file trains each other kind ----------
REGISTRY_VARIANTS = study.registry_variants
VARIANT_RULES = study.variant_rules  # each rule's grid variants, e.g. {"kto": ["kto"], "orpo": ["orpo"]}
VARIANT_RULE_DIR = Path(workflow.basedir) / "workflow" / "rules" / "variants"


def variant_rule_files():
    """The rule file of every rule variant in the grid (the Snakefile includes them), each
    checked to exist before anything runs."""
    files = []
    for rule_name, variants in VARIANT_RULES.items():
        path = VARIANT_RULE_DIR / f"{rule_name}.smk"
        if not path.is_file():
            shipped = ", ".join(sorted(f.stem for f in VARIANT_RULE_DIR.glob("*.smk"))) or "none"
            raise WorkflowError(
                f"invalid config: variants.{variants[0]}.rule: no rule file {path.relative_to(workflow.basedir)} "
                f"(the folder holds rule files for {shipped})"
            )
        files.append(str(path.relative_to(workflow.basedir)))
    return files


def variants_of(rule_name):
    """Wildcard constraint of a training rule: the grid variants it trains."""
    return _one_of(REGISTRY_VARIANTS if rule_name == "dpo" else VARIANT_RULES.get(rule_name, []))


# The output contract of every training rule: a policy's folder holds model/ (a transformers
# checkpoint) and train_log.json; generate, evaluate, summary and MLflow read nothing else.
POLICY_DIR = f"{STUDY}/dpo/variant~{{variant}}/beta~{{beta}}/seed~{{seed}}"


def checkpoint_outputs():
    """A training rule's outputs at evaluation.checkpoints (dpolab.train.StepSnapshots writes them):
    `**checkpoint_outputs()` in its output. A rule without them trains no checkpoints."""
    return {f"step_{step}": directory(f"{POLICY_DIR}/step~{step}/model") for step in study.evaluation.checkpoints}


def policy_log(rule_name):
    return f"{STUDY}/logs/{rule_name}/variant~{{variant}}/beta~{{beta}}/seed~{{seed}}.log"


def policy_benchmark(rule_name):
    return f"{STUDY}/benchmarks/{rule_name}/variant~{{variant}}/beta~{{beta}}/seed~{{seed}}.tsv"


def start_model(wildcards):
    """The model the training of a rule variant starts from (its `starts_from`, sft or base)."""
    starts_from = study.variants[wildcards.variant].starts_from
    return SFT_MODEL if starts_from == "sft" else f"{STUDY}/base/model"


def policy_model_dir(wildcards):
    if wildcards.policy == "sft":
        return SFT_MODEL
    return f"{STUDY}/dpo/{wildcards.policy}/model"


def policy_start_model(wildcards):
    """The model a policy's training started from (its adapter's base under peft:)."""
    if wildcards.policy == "sft":
        return SFT_MODEL
    point = study.point(**parse_policy(wildcards.policy))
    return SFT_MODEL if point.starts_from == "sft" else f"{STUDY}/base/model"


# ---- generation: one vLLM engine per policy, or per batch of LoRA policies on the SFT model --------
ADAPTER_BATCHES = study.adapter_batches
OWN_ENGINE_POLICIES = [p for p in EVALUATED_POLICIES if not any(p in batch for batch in ADAPTER_BATCHES)]


def shared_engine_resources(policies):
    """A shared-engine generate job: one engine's memory, every policy's sampling time."""
    return shared_engine_resources_of(study, MODEL_PARAMS, policies)


# ---- training jobs of several processes (distributed:): the launch a dry run shows ----------------
def launch_message(rule_name):
    """None (Snakemake's own job description) for one process per job; with several, the job's
    GPUs, nodes and the `accelerate launch` command its script runs (dpolab.launch)."""
    if not study.distributed.launched:
        return None
    from dpolab.launch import launch_command

    resources = resources_for(rule_name if rule_name in ("sft", "reward_model") else "dpo")
    nodes = resources.get("nodes", 1)  # the plugin's gpu resource is the job's total (sbatch --gpus)
    gpus = (
        f"{resources['gpu'] // nodes} GPU(s) per node x {nodes} node(s)"
        if "gpu" in resources
        else f"{study.distributed.processes} CPU processes"
    )
    command = launch_command(study.distributed, study.training, "{log}.job.json", relative_to=Path(workflow.basedir))
    point = " ({wildcards})" if rule_name not in ("sft", "reward_model") else ""
    # the first line's end split off, so `snakemake --lint` does not read this message as a rule of this file
    return (
        f"rule {rule_name}{point}"
        f": {gpus}, mem_mb={resources['mem_mb']}, runtime={resources['runtime']} min\n"
        f"    launch: {command}"
    )


def judge_inputs(wildcards=None):
    """What the pointwise judges load: the IMDb gold classifier, or a reward model trained in the study."""
    if not study.preferences:
        return {"judge": f"{STUDY}/judge/gold"}
    return {"reward_model": REWARD_MODEL_DIR} if study.trains_reward_model else {}


def judge_accuracy(wildcards=None):
    """The held-out accuracy of the judge trained in the study (gold classifier or reward model), if any."""
    if not study.preferences:
        return {"judge_accuracy": f"{STUDY}/judge/accuracy.json"}
    return {"judge_accuracy": f"{STUDY}/reward_model/accuracy.json"} if study.trains_reward_model else {}


def study_targets():
    return [f"{STUDY}/summary.csv", f"{STUDY}/plots/reward_vs_kl.png", f"{STUDY}/compare/win_rates.csv"]


STUDY_RUN = f"{STUDY}/mlflow/study_run.json"


# ---- rule-specific input functions and hooks ------------------------------------------------
def kto_examples_source(wildcards):
    """The study's pairs, or the variant's own unpaired dataset when it is a local file (a Hub
    dataset id is loaded by the job and has no file to wait for)."""
    from dpolab.unpaired import is_local_file

    source = study.variants[wildcards.variant].params.get("unpaired_data")
    if source is None:
        return {"pairs": f"{STUDY}/pairs/pairs.parquet"}
    return {"unpaired": source} if is_local_file(source) else {}


def pairwise_judge_model(wildcards):
    """The study's base model when the judge uses it (source: base); else nothing to wait for."""
    spec = study.config["judges"][wildcards.judge]
    return [f"{STUDY}/base/model"] if spec["source"] == "base" else []


def log_job_benchmarks(outcome):
    """The jobs' benchmark files (runtime, peak memory) joined to their MLflow runs, from the
    onsuccess/onerror hooks (mlflow.smk): Snakemake writes a job's benchmark file after the job
    ends, so they are logged once the jobs are done (a repeat logs nothing twice)."""
    from snakemake.logging import logger

    from dpolab import tracking

    if Path(STUDY_RUN).exists():
        try:
            counts = tracking.log_benchmarks(STUDY_RUN)
            logger.info(f"MLflow: benchmarks logged for {counts['logged']} job runs ({outcome})")
        except Exception as error:  # the study's results stand even if the store went away
            logger.warning(f"MLflow: could not log the job benchmarks: {error}")


# ---- a preference study's data (workflow/rules/preference_data.smk) ----
def preference_data_outputs():
    """The data rule's outputs in a preference study: the pairs stage's files too (no pairs job runs)."""
    outputs = {
        "pairs": f"{STUDY}/pairs/pairs.parquet",
        "pair_stats": f"{STUDY}/pairs/stats.json",
        "prompts_test": f"{STUDY}/data/prompts_test.parquet",
        "card": f"{STUDY}/data/data_card.json",
    }
    if not study.sft_skipped:
        outputs["sft_train"] = f"{STUDY}/data/sft_train.parquet"
    if study.trains_reward_model:
        outputs["reward_train"] = f"{STUDY}/data/reward_train.parquet"
        outputs["reward_eval"] = f"{STUDY}/data/reward_eval.parquet"
    return outputs


def local_data_files():
    """Local data files and folders, so that an edited file reruns the data job."""
    from dpolab.preference_data import is_local

    paths = [study.data.path]
    if study.sft_source == "dataset":
        paths.append(study.sft_data.dataset["path"])
    return [p for p in paths if is_local(p)]
