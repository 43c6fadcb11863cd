"""What a study will ask of a cluster, before it runs: every rule's jobs with their GPUs, nodes,
memory and hours (from dpolab.resources, the numbers the rules declare), and the totals.

`make dry-run CONFIG=... [PROFILE=profiles/slurm]` prints Snakemake's dry run and then this table:
the job counts come from the dry run's own "Job stats" (so they are the DAG's, not a second
count), the per-job figures from the same functions the rule files call.

    python -m dpolab.plan CONFIG DRY_RUN_OUTPUT
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from dpolab.resources import job_resources, model_params
from dpolab.study import Study

# Rules whose jobs are sized as another stage's (the rule files say the same)
STAGE_OF_RULE = {"preference_data": "data", "kto": "dpo", "orpo": "dpo"}
STARTUP_MINUTES = 10  # one engine start that a shared-engine job's policies share


def shared_engine_resources(study: Study, n_params: int, policies: int) -> dict:
    """A shared-engine generate job (one vLLM engine, several LoRA policies): one engine's memory
    and GPUs, every policy's sampling time after a single start."""
    resources = job_resources("generate", study, n_params)
    per_policy = max(1, resources["runtime"] - STARTUP_MINUTES)
    return {**resources, "runtime": STARTUP_MINUTES + policies * per_policy}


def job_stats(dry_run_output: str) -> dict[str, int]:
    """rule -> job count, from the "Job stats" table of `snakemake -n` (the last one printed)."""
    tables = dry_run_output.split("Job stats:")
    if len(tables) < 2:
        raise ValueError(
            "no 'Job stats:' table in the dry run's output (did the dry run fail, or is there nothing to do?)"
        )
    counts = {}
    for line in tables[-1].splitlines()[3:]:
        match = re.fullmatch(r"\s*(\S+)\s+(\d+)\s*", line)
        if not match:
            break
        counts[match.group(1)] = int(match.group(2))
    counts.pop("total", None)
    return counts


def rule_resources(rule: str, study: Study, n_params: int) -> dict:
    batch = re.fullmatch(r"generate_adapters_(\d+)", rule)
    if batch:
        return shared_engine_resources(study, n_params, len(study.adapter_batches[int(batch.group(1))]))
    stage = STAGE_OF_RULE.get(rule, rule if rule not in study.variant_rules else "dpo")
    return job_resources(stage, study, n_params)


def plan_rows(study: Study, n_params: int, counts: dict[str, int]) -> list[dict]:
    rows = []
    for rule, jobs in counts.items():
        if rule == "all":
            continue
        resources = rule_resources(rule, study, n_params)
        gpus = resources.get("gpu", 0)  # the job's total over its nodes (the SLURM plugin's --gpus)
        hours = resources["runtime"] / 60
        rows.append(
            {
                "rule": rule,
                "jobs": jobs,
                "gpus_per_job": gpus,
                "nodes": resources.get("nodes", 1),
                "mem_gb": resources["mem_mb"] / 1024,
                "hours_per_job": hours,
                "gpu_hours": jobs * gpus * hours,
                "job_hours": jobs * hours,
            }
        )
    return rows


def format_plan(study: Study, rows: list[dict]) -> str:
    header = (
        f"{'rule':<22} {'jobs':>5} {'GPUs/job':>8} {'nodes':>5} {'mem GB':>7} {'h/job':>7} {'job-h':>7} {'GPU-h':>8}"
    )
    lines = [
        f"Plan of study {study.name} ({study.device}; runtimes are the jobs' requested limits, "
        "upper bounds with head-room):",
        header,
        "-" * len(header),
    ]
    for row in rows:
        lines.append(
            f"{row['rule']:<22} {row['jobs']:>5} {row['gpus_per_job']:>8} {row['nodes']:>5} {row['mem_gb']:>7.1f} "
            f"{row['hours_per_job']:>7.2f} {row['job_hours']:>7.1f} {row['gpu_hours']:>8.1f}"
        )
    jobs = sum(row["jobs"] for row in rows)
    gpu_hours = sum(row["gpu_hours"] for row in rows)
    lines.append("-" * len(header))
    job_hours = sum(row["job_hours"] for row in rows)
    lines.append(f"{'total':<22} {jobs:>5} {'':>8} {'':>5} {'':>7} {'':>7} {job_hours:>7.1f} {gpu_hours:>8.1f}")
    widest = max((row["gpus_per_job"] for row in rows), default=0)
    if widest:
        lines.append(f"largest job: {widest} GPUs; GPU-hours are the sum of jobs x GPUs x requested hours")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from dpolab.config import read_study
    from dpolab.errors import ConfigError

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m dpolab.plan CONFIG DRY_RUN_OUTPUT", file=sys.stderr)
        return 2
    try:
        study = read_study(argv[0], check_environment=False)
        n_params = model_params(study.config["model"])
    except ConfigError as error:
        print(f"{argv[0]}: {error}", file=sys.stderr)
        return 1
    if n_params is None:
        print(f"{argv[0]}: model.n_params: set it to plan a Hub model that is not in the local cache", file=sys.stderr)
        return 1
    counts = job_stats(Path(argv[1]).read_text())
    print(format_plan(study, plan_rows(study, n_params, counts)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
