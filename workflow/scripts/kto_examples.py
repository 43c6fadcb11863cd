from pathlib import Path

from dpolab import jobs
from dpolab.unpaired import make_examples

study = jobs.study_of(snakemake)
settings = study.section("variants")[snakemake.wildcards.variant]
with jobs.job(snakemake, "kto_examples", params={"variant": settings}):
    make_examples(
        settings,
        pairs_file=Path(snakemake.input.pairs) if "pairs" in snakemake.input.keys() else None,
        examples_file=Path(snakemake.output.examples),
        stats_file=Path(snakemake.output.stats),
    )
