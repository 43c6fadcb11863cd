import json
from pathlib import Path

import pandas as pd

from dpolab import jobs
from dpolab.study import thaw
from dpolab.train import run_dpo

study = jobs.study_of(snakemake)
point = study.point(snakemake.wildcards.variant, snakemake.wildcards.beta, snakemake.wildcards.seed)
loss_params = thaw(point.loss_params)
jobs.train_policy(
    snakemake,
    run_dpo,
    params={"dpo": study.section("dpo"), "loss": {"name": point.loss, "beta": point.beta, **loss_params}},
    tags={"loss": point.loss},
    sft_dir=Path(snakemake.input.sft),
    pairs=pd.read_parquet(snakemake.input.pairs),
    reference=pd.read_parquet(snakemake.input.reference),
    reference_meta=json.loads(Path(snakemake.input.reference_meta).read_text()),
    cfg=study.dpo,
    loss_name=point.loss,
    loss_params=loss_params,
    beta=point.beta,
    seed=point.seed,
)
