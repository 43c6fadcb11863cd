from pathlib import Path

import pandas as pd

from dpolab import jobs
from dpolab.config import grid_point
from dpolab.train import DPOSettings, run_orpo
from dpolab.variants import train_section

config = snakemake.config
point = grid_point(config, snakemake.wildcards.variant, snakemake.wildcards.beta, snakemake.wildcards.seed)
settings, train = point.loss_params, train_section(config, point.loss_params)
jobs.train_policy(
    snakemake,
    run_orpo,
    params={"dpo": train, "loss": {"name": "orpo", "beta": point.beta, **settings}},
    tags={"loss": point.loss, "starts_from": point.starts_from},
    start_dir=Path(snakemake.input.start),
    pairs=pd.read_parquet(snakemake.input.pairs),
    cfg=DPOSettings(**train),
    beta=point.beta,
    seed=point.seed,
)
