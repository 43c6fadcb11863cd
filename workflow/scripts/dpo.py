import json
from pathlib import Path

import pandas as pd

from dpolab import jobs
from dpolab.config import grid_point
from dpolab.train import DPOSettings, run_dpo

config = snakemake.config
point = grid_point(config, snakemake.wildcards.variant, snakemake.wildcards.beta, snakemake.wildcards.seed)
jobs.train_policy(
    snakemake,
    run_dpo,
    params={"dpo": config["dpo"], "loss": {"name": point.loss, "beta": point.beta, **point.loss_params}},
    tags={"loss": point.loss},
    sft_dir=Path(snakemake.input.sft),
    pairs=pd.read_parquet(snakemake.input.pairs),
    reference=pd.read_parquet(snakemake.input.reference),
    reference_meta=json.loads(Path(snakemake.input.reference_meta).read_text()),
    cfg=DPOSettings(**config["dpo"]),
    loss_name=point.loss,
    loss_params=point.loss_params,
    beta=point.beta,
    seed=point.seed,
)
