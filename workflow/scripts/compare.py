import json
from pathlib import Path

import mlflow
import pandas as pd

from dpolab import jobs
from dpolab.compare import (CompareSettings, dataset_responses, length_analysis, outcome_table, pairwise_judgments,
                            pointwise_judgments, score_table, win_rates)
from dpolab.judge_factory import make_judge, prompts_for

study, inputs, outputs = jobs.study_of(snakemake), snakemake.input, snakemake.output
judge_specs = study.section("judges")
with jobs.job(snakemake, "compare", params={"evaluation": study.section("evaluation"), "judges": judge_specs}):
    settings = CompareSettings.from_config(study.section("evaluation"))
    scored = pd.concat([pd.read_parquet(f) for f in inputs.scored], ignore_index=True)
    prompts = pd.read_parquet(inputs.prompts)
    chosen = dataset_responses(prompts)
    by_id = prompts.set_index("prompt_id").loc[chosen.index]
    test_prompts = by_id["prompt"].tolist()
    instructions = by_id["instruction"].tolist() if "instruction" in by_id else None  # what chat-template judges read
    frames = []
    for name in study.pointwise_judges:
        chosen_scores = None
        if len(chosen):
            judge = make_judge(name, judge_specs[name], gold_dir=inputs.get("judge"), reward_model_dir=inputs.get("reward_model"),
                               reward_model_max_length=study.reward_model.max_length)
            chosen_scores = pd.Series(judge.score(prompts_for(judge_specs[name], test_prompts, instructions),
                                                  chosen.tolist()), index=chosen.index)
        frames.append(pointwise_judgments(scored, name, chosen_scores))
    for name, verdict_file in zip(study.pairwise_judges, inputs.pairwise, strict=True):
        frames.append(pairwise_judgments(pd.read_parquet(verdict_file), scored, name))
    judgments = pd.concat(frames, ignore_index=True)
    scores = score_table(scored, study.pointwise_judges)
    rates, lc_draws = win_rates(judgments, scores, settings, snakemake.params.policies, return_lc_draws=True)
    analysis = length_analysis(scored, scores, json.loads(Path(inputs.pair_stats).read_text()), rates)

    judgments.to_parquet(outputs.judgments, index=False)
    scores.to_parquet(outputs.scores, index=False)
    outcome_table(scored).to_parquet(outputs.outcomes, index=False)
    lc_draws.to_parquet(outputs.lc_draws, index=False)
    rates.to_csv(outputs.win_rates, index=False)
    Path(outputs.length).write_text(json.dumps(analysis, indent=2))
    print(rates.to_string(index=False))
    mlflow.log_table(rates, "win_rates.json")
    mlflow.log_artifact(outputs.win_rates)
    mlflow.log_artifact(outputs.length)
    mlflow.log_metrics({"chosen_longer_share": analysis["data"]["chosen_longer_share"],
                        "pairs_length_difference_mean": analysis["data"]["length_difference_mean"]})
