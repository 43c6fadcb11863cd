from pathlib import Path

from dpolab import jobs
from dpolab.generate_jobs import generate_adapters

study = jobs.study_of(snakemake)
jobs.setup(snakemake)
generate_adapters(
    study,
    list(snakemake.params.policies),
    [Path(p) for p in snakemake.input.adapters],
    reference_dir=Path(snakemake.input.reference),
    prompts_file=Path(snakemake.input.prompts),
    out_files=[Path(f) for f in snakemake.output.samples],
    cache_dir=jobs.vllm_cache(snakemake),
    policy_run=lambda policy: jobs.job(
        snakemake,
        "generate",
        tags={**jobs.temperatures_tag(study), "shared_engine": snakemake.rule},
        params={"generation": study.section("generation")},
        wildcards={"policy": policy},
        run_rule="generate",
        set_up=False,
    ),
)
