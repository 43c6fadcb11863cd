from pathlib import Path

from dpolab import jobs
from dpolab.pairwise_jobs import judge_pairs

study, judge_name = jobs.study_of(snakemake), snakemake.wildcards.judge
with jobs.job(
    snakemake,
    "pairwise_judge",
    params={"judge": {judge_name: study.section("judges")[judge_name]}},
    tags={"judge": judge_name},
):
    judge_pairs(
        study,
        judge_name,
        prompts_file=Path(snakemake.input.prompts),
        policy_temperatures=snakemake.params.policy_temperatures,
        samples_files=[Path(f) for f in snakemake.input.samples],
        verdicts_file=Path(snakemake.output.verdicts),
        verdict_cache=Path(snakemake.params.verdict_cache),
        base_model_dir=Path(snakemake.input.model[0]) if snakemake.input.model else None,
        cache_dir=jobs.vllm_cache(snakemake),
    )
