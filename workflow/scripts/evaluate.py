from pathlib import Path

from dpolab import jobs
from dpolab.evaluate_jobs import evaluate_one, policy_identity

study, inputs, outputs = jobs.study_of(snakemake), snakemake.input, snakemake.output
_, skipped_sft = policy_identity(study, snakemake.wildcards.policy)
with jobs.job(
    snakemake,
    "evaluate",
    tags={**jobs.temperatures_tag(study), "skipped_sft": str(skipped_sft).lower()},
    params={"evaluation": study.section("evaluation"), "judges": study.section("judges")},
):
    evaluate_one(
        study,
        snakemake.wildcards.policy,
        prompts_file=Path(inputs.prompts),
        samples_files=[Path(f) for f in inputs.samples],
        metrics_files=[Path(f) for f in outputs.metrics],
        scored_files=[Path(f) for f in outputs.scored],
        gold_dir=inputs.get("judge"),
        reward_model_dir=inputs.get("reward_model"),
    )
