from pathlib import Path

import pandas as pd

from dpolab import jobs
from dpolab.config import grid_point
from dpolab.train import DPOSettings, run_kto
from dpolab.variants import train_section

config = snakemake.config
point = grid_point(config, snakemake.wildcards.variant, snakemake.wildcards.beta, snakemake.wildcards.seed)
settings, train = point.loss_params, train_section(config, point.loss_params)
jobs.train_policy(
    snakemake,
    run_kto,
    params={"dpo": train, "loss": {"name": "kto", "beta": point.beta, **settings}},
    tags={"loss": point.loss, "starts_from": point.starts_from},
    start_dir=Path(snakemake.input.start),
    examples=pd.read_parquet(snakemake.input.examples),
    cfg=DPOSettings(**train),
    beta=point.beta,
    desirable_weight=settings["desirable_weight"],
    undesirable_weight=settings["undesirable_weight"],
    seed=point.seed,
)
