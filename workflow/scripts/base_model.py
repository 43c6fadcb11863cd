from pathlib import Path

from dpolab import jobs
from dpolab.models import make_base_model

model = jobs.study_of(snakemake).section("model")
with jobs.job(snakemake, "base_model", params={"model": model}):
    make_base_model(model, Path(snakemake.output.model))
