import pandas as pd

from dpolab import jobs
from dpolab.train import run_kto

jobs.train_rule_variant(
    snakemake,
    run_kto,
    settings=("desirable_weight", "undesirable_weight"),
    examples=pd.read_parquet(snakemake.input.examples),
)
