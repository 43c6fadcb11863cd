from pathlib import Path

from dpolab import jobs
from dpolab.train import make_reference

study = jobs.study_of(snakemake)
with jobs.job(snakemake, "reference", params={"dpo.max_length": study.dpo.max_length}):
    make_reference(
        study,
        sft_dir=Path(snakemake.input.sft),
        pairs_file=Path(snakemake.input.pairs),
        logps_file=Path(snakemake.output.logps),
        meta_file=Path(snakemake.output.meta),
    )
