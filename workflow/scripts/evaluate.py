import json
from pathlib import Path

import mlflow
import pandas as pd

from dpolab import jobs
from dpolab.config import grid_point, parse_policy
from dpolab.evaluate import completion_logps, evaluate_policy
from dpolab.judges import GoldJudge, VaderJudge
from dpolab.models import load_policy

config, wildcards, inputs, outputs = snakemake.config, snakemake.wildcards, snakemake.input, snakemake.output
ev = config["evaluation"]
if wildcards.policy == "sft":
    identity = {"variant": "sft", "loss": "", "beta": None, "seed": None}
else:
    point = grid_point(config, **parse_policy(wildcards.policy))
    identity = {"variant": point.variant, "loss": point.loss, "beta": point.beta, "seed": point.seed}

with jobs.job(snakemake, "evaluate", tags=jobs.temperatures_tag(snakemake.config), params={"evaluation": ev}):
    gold, vader = GoldJudge.load(Path(inputs.judge)), VaderJudge()
    reference, _ = load_policy(Path(inputs.reference))
    policy = reference if wildcards.policy == "sft" else load_policy(Path(inputs.model))[0]

    def scored(path):
        frame = pd.read_json(path, lines=True)
        texts = frame["prompt"] + frame["completion"]  # the judges read the whole review
        return frame.assign(
            gold_score=gold.score(texts), vader_score=vader.score(texts),
            completion_tokens=frame["completion_token_ids"].str.len(),
        )

    temperatures = config["generation"]["temperatures"]
    for temperature, samples_file, sft_file, metrics_file, scored_file in zip(
        temperatures, inputs.samples, inputs.sft_samples, outputs.metrics, outputs.scored
    ):
        samples, baseline = scored(samples_file), scored(sft_file)
        token_ids = samples["prompt_token_ids"].tolist(), samples["completion_token_ids"].tolist()
        reference_logps = completion_logps(reference, *token_ids)
        policy_logps = reference_logps if policy is reference else completion_logps(policy, *token_ids)
        metrics = evaluate_policy(
            samples, baseline[["prompt_id", "gold_score"]], policy_logps=policy_logps, reference_logps=reference_logps,
            resamples=ev["bootstrap_resamples"], confidence=ev["confidence_level"], seed=ev["seed"],
        )
        metrics = {"policy": wildcards.policy, **identity, "temperature": float(temperature), **metrics}
        Path(metrics_file).write_text(json.dumps(metrics, indent=2))
        samples.assign(policy_logps=policy_logps, reference_logps=reference_logps).drop(
            columns=["prompt_token_ids", "completion_token_ids"]).to_parquet(scored_file, index=False)
        step = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k not in ("beta", "seed", "temperature")}
        mlflow.log_metrics({f"{k}/temp_{float(temperature):g}": v for k, v in step.items()})
        mlflow.log_table(
            samples[["prompt_id", "prompt", "completion", "gold_score", "vader_score", "completion_tokens"]],
            f"generations_scored/temp_{float(temperature):g}.json",
        )
