from pathlib import Path

from dpolab import jobs
from dpolab.preference_data import make_preference_data

study = jobs.study_of(snakemake)
with jobs.job(snakemake, "data", params={"data": study.section("data"), "sft": study.section("sft")}):
    make_preference_data(
        study, {name: Path(path) for name, path in snakemake.output.items()}, Path(snakemake.input.base)
    )
