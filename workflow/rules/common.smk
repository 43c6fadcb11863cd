# Helpers shared by the rule files: config validation, grid, wildcard constraints, targets.
import re

from dpolab.config import format_value, grid_points, policies, validate_config
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


def _one_of(values):
    return "|".join(re.escape(str(v)) for v in values)


wildcard_constraints:
    variant=_one_of(config["grid"]["variants"]),
    beta=_one_of(format_value(float(b)) for b in config["grid"]["betas"]),
    seed=_one_of(config["grid"]["seeds"]),
    policy=_one_of(POLICIES),
    temperature=_one_of(TEMPERATURES),


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
    return [f"{STUDY}/summary.csv", f"{STUDY}/plots/reward_vs_kl.png"]


STUDY_RUN = f"{STUDY}/mlflow/study_run.json"
