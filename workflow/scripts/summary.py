from dpolab import jobs
from dpolab.summary_jobs import summarise

study = jobs.study_of(snakemake)
with jobs.job(snakemake, "summary", params={"evaluation": study.section("evaluation")}):
    summarise(
        study, dict(snakemake.input.items()), dict(snakemake.output.items()), score_judge=snakemake.params.score_judge
    )
