from pathlib import Path

from dpolab import jobs

jobs.train_reward(
    snakemake,
    base_dir=Path(snakemake.input.base),
    train_pairs=Path(snakemake.input.train),
    eval_pairs=Path(snakemake.input.eval),
    model_dir=Path(snakemake.output.model),
    accuracy_file=Path(snakemake.output.accuracy),
)
