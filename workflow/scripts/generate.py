from pathlib import Path

from dpolab import jobs
from dpolab.generate_jobs import generate_one

study = jobs.study_of(snakemake)
with jobs.job(
    snakemake, "generate", tags=jobs.temperatures_tag(study), params={"generation": study.section("generation")}
):
    generate_one(
        study,
        snakemake.wildcards.policy,
        model_dir=Path(snakemake.input.model),
        start_dir=Path(snakemake.input.start),
        reference_dir=Path(snakemake.input.reference),
        prompts_file=Path(snakemake.input.prompts),
        out_files=[Path(f) for f in snakemake.output.samples],
        cache_dir=jobs.vllm_cache(snakemake),
    )
