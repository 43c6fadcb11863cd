from pathlib import Path

from dpolab import jobs
from dpolab.judges import make_gold_judge

study = jobs.study_of(snakemake)
with jobs.job(snakemake, "judge", params={"judge": study.section("judge")}):
    make_gold_judge(
        Path(snakemake.input.reviews), study.judge, Path(snakemake.output.judge), Path(snakemake.output.accuracy)
    )
