import pandas as pd

from dpolab import jobs
from dpolab.train import run_orpo

jobs.train_rule_variant(snakemake, run_orpo, pairs=pd.read_parquet(snakemake.input.pairs))
