from pathlib import Path

from dpolab import jobs
from dpolab.compare_jobs import CompareOutputs, compare_study

study, inputs, outputs = jobs.study_of(snakemake), snakemake.input, snakemake.output
with jobs.job(
    snakemake, "compare", params={"evaluation": study.section("evaluation"), "judges": study.section("judges")}
):
    compare_study(
        study,
        scored_files=[Path(f) for f in inputs.scored],
        pairwise_files=[Path(f) for f in inputs.pairwise],
        prompts_file=Path(inputs.prompts),
        pair_stats_file=Path(inputs.pair_stats),
        policies=snakemake.params.policies,
        outputs=CompareOutputs(
            *(Path(outputs[k]) for k in ("judgments", "scores", "outcomes", "lc_draws", "win_rates", "length"))
        ),
        gold_dir=inputs.get("judge"),
        reward_model_dir=inputs.get("reward_model"),
    )
