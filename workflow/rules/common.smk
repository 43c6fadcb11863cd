# Helpers shared by the rule files: config validation, grid, wildcard constraints, targets.
import re

from dpolab.config import all_betas, format_value, grid_points, pairwise_judges, policies, validate_config
from dpolab.errors import ConfigError

try:
    # Schema defaults are filled in here; cross-key checks run before any job is scheduled.
    validate_config(config)
except ConfigError as error:
    raise WorkflowError(f"invalid config: {error}") from None

STUDY = f"results/{config['study']}"
GRID = grid_points(config)
POLICIES = policies(config)
TEMPERATURES = [format_value(float(t)) for t in config["generation"]["temperatures"]]
DEVICE = config["device"]
POLICY_TEMPERATURES = [(p, t) for p in POLICIES for t in TEMPERATURES]  # explicit order for study-wide rules
PAIRWISE_JUDGES = pairwise_judges(config)
# the score-vs-length scatter needs a pointwise judge (the config has one): the primary one if it is, else the first
SCORE_JUDGE = next(j for j in [config["evaluation"]["primary_judge"], *config["judges"]] if config["judges"][j]["kind"] != "llm_pairwise")


def _one_of(values):
    return "|".join(re.escape(str(v)) for v in values)


wildcard_constraints:
    variant=_one_of(config["grid"]["variants"]),
    beta=_one_of(format_value(b) for b in all_betas(config)),
    seed=_one_of(config["grid"]["seeds"]),
    policy=_one_of(POLICIES),
    temperature=_one_of(TEMPERATURES),
    judge=_one_of(config["judges"]),


def stage_threads():
    """A stage that runs alone in the DAG (sft, pairs, reference) takes every core (max 8)."""
    return max(1, min(workflow.cores, 8))


def heavy_threads():
    """Grid jobs (dpo, generate) take half the cores (at least 1, at most 8) so two run
    side by side: per-job start-up (imports, engine set-up) is single-threaded, and on small
    machines one thread per job is the steady setting. Profiles may override (set-threads)."""
    return max(1, min(workflow.cores // 2, 8))


def policy_model_dir(wildcards):
    if wildcards.policy == "sft":
        return f"{STUDY}/sft/model"
    return f"{STUDY}/dpo/{wildcards.policy}/model"


def study_targets():
    return [f"{STUDY}/summary.csv", f"{STUDY}/plots/reward_vs_kl.png", f"{STUDY}/compare/win_rates.csv"]


STUDY_RUN = f"{STUDY}/mlflow/study_run.json"
