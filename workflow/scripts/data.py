from pathlib import Path

from dpolab import jobs
from dpolab.data import make_data

study = jobs.study_of(snakemake)
with jobs.job(snakemake, "data", params={"data": study.section("data")}):
    make_data(study.data, Path(snakemake.output.card))
