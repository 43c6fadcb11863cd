from pathlib import Path

from dpolab import jobs

jobs.train_sft(
    snakemake,
    base_dir=Path(snakemake.input.base),
    texts=Path(snakemake.input.texts),
    model_dir=Path(snakemake.output.model),
)
