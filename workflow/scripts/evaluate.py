import json
from pathlib import Path

import mlflow
import pandas as pd

from dpolab import jobs
from dpolab.study import parse_policy
from dpolab.evaluate import evaluate_policy, sample_logps
from dpolab.generate import read_samples
from dpolab.judge_factory import make_judge, prompts_for
from dpolab.judges import GoldJudge, VaderJudge

study, wildcards, inputs, outputs = jobs.study_of(snakemake), snakemake.wildcards, snakemake.input, snakemake.output
ev, judge_specs = study.evaluation, study.section("judges")
if wildcards.policy == "sft":
    identity, skipped_sft = {"variant": "sft", "loss": "", "beta": None, "seed": None, "step": 0}, False
else:
    parts = parse_policy(wildcards.policy)
    point = study.point(**parts)
    # the training step of this policy: a checkpoint's, or the last one for the final policy
    step = int(parts.get("step", study.trained_steps(point.variant)))
    identity = {"variant": point.variant, "loss": point.loss, "beta": point.beta, "seed": point.seed, "step": step}
    skipped_sft = point.skipped_sft

with jobs.job(snakemake, "evaluate", tags={**jobs.temperatures_tag(study), "skipped_sft": str(skipped_sft).lower()}, params={"evaluation": study.section("evaluation"), "judges": judge_specs}):
    # The IMDb miniature: gold and VADER always (the study's reward and its second opinion), and
    # judges of kind gold/vader reuse those scores. Other pointwise judges (reward models) load here.
    gold, vader = (GoldJudge.load(Path(inputs.judge)), VaderJudge()) if not study.preferences else (None, None)
    judges = {name: make_judge(name, judge_specs[name], reward_model_dir=inputs.get("reward_model"),
                               reward_model_max_length=study.reward_model.max_length)
              for name in study.pointwise_judges if judge_specs[name]["kind"] not in ("gold", "vader")}
    test_prompts = pd.read_parquet(inputs.prompts)
    instruction = test_prompts.set_index("prompt_id")["instruction"] if "instruction" in test_prompts else None

    for temperature, samples_file, metrics_file, scored_file in zip(
        study.temperatures, inputs.samples, outputs.metrics, outputs.scored
    ):
        samples = read_samples(samples_file).assign(temperature=float(temperature))
        prompts, completions = samples["prompt"].tolist(), samples["completion"].tolist()
        instructions = instruction.loc[samples["prompt_id"]].tolist() if instruction is not None else None
        by_kind = {"gold": gold.score(prompts, completions), "vader": vader.score(prompts, completions)} if gold else {}
        samples = samples.assign(
            **({"gold_score": by_kind["gold"], "vader_score": by_kind["vader"]} if gold else {}),
            completion_tokens=samples["completion_token_ids"].str.len(), chars=samples["completion"].str.len(),
            **{f"score_{name}": by_kind[judge_specs[name]["kind"]] if name not in judges else judges[name].score(prompts_for(judge_specs[name], prompts, instructions), completions)
               for name in study.pointwise_judges},
        )
        # a policy's reward: the gold classifier's P(positive) (IMDb), else the study's score judge
        samples["reward_score"] = samples["gold_score"] if gold else samples[f"score_{study.reward_judge}"]
        policy_logps, reference_logps = sample_logps(samples, samples_file)
        metrics = evaluate_policy(
            samples, policy_logps=policy_logps, reference_logps=reference_logps,
            resamples=ev.bootstrap_resamples, confidence=ev.confidence_level, seed=ev.seed,
        )
        metrics = {"policy": wildcards.policy, **identity, "temperature": float(temperature), **metrics}
        Path(metrics_file).write_text(json.dumps(metrics, indent=2))
        scored = samples.assign(policy=wildcards.policy)
        scored.drop(columns=["prompt_token_ids", "completion_token_ids"]).to_parquet(scored_file, index=False)
        values = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k not in (*identity, "temperature")}
        # at the policy's training step: a policy's checkpoints and its final evaluation line up in MLflow
        mlflow.log_metrics({f"{k}/temp_{float(temperature):g}": v for k, v in values.items()}, step=identity["step"])
        score_columns = (["gold_score", "vader_score"] if gold else []) + [f"score_{name}" for name in study.pointwise_judges]
        mlflow.log_table(
            samples[["prompt_id", "prompt", "completion", *score_columns, "completion_tokens"]],
            f"generations_scored/temp_{float(temperature):g}.json",
        )
