from pathlib import Path

from dpolab import jobs
from dpolab.pairs import make_pairs

study = jobs.study_of(snakemake)
with jobs.job(snakemake, "pairs", params={"pairs": study.section("pairs")}):
    make_pairs(
        study,
        prompts_file=Path(snakemake.input.prompts),
        sft_dir=Path(snakemake.input.sft),
        judge_dir=Path(snakemake.input.judge),
        pairs_file=Path(snakemake.output.pairs),
        stats_file=Path(snakemake.output.stats),
        cache_dir=jobs.vllm_cache(snakemake),
    )
