"""The evaluate stage's job: one policy's samples at every temperature scored by the study's
pointwise judges, then its metrics (dpolab.evaluate) and scored samples written and logged.

Judges load once per job, not per temperature. In the IMDb miniature the gold classifier and
VADER always score (the study's reward and its second opinion), and judges of kind gold/vader
reuse those scores; other pointwise judges (reward models) load here. No language model loads:
the samples carry their policy and reference log-probs (the generate job)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from dpolab.evaluate import evaluate_policy, sample_logps
from dpolab.generate import read_samples
from dpolab.judge_factory import make_judge, prompts_for
from dpolab.study import Study, parse_policy


def policy_identity(study: Study, policy: str) -> tuple[dict, bool]:
    """The columns that name a policy in its metrics (variant, loss, beta, seed, and the training
    step: a checkpoint's, the last one for a final policy, 0 for SFT) and whether its training
    skipped SFT."""
    if policy == "sft":
        return {"variant": "sft", "loss": "", "beta": None, "seed": None, "step": 0}, False
    parts = parse_policy(policy)
    point = study.point(**parts)
    step = int(parts.get("step", study.trained_steps(point.variant)))
    return {
        "variant": point.variant,
        "loss": point.loss,
        "beta": point.beta,
        "seed": point.seed,
        "step": step,
    }, point.skipped_sft


@dataclass
class PointwiseJudges:
    """The study's pointwise judges, loaded once: `builtin` (gold, vader) in the IMDb miniature,
    `others` by name (reward models); `kinds` the kind of every judge by name."""

    kinds: dict[str, str]
    specs: dict[str, dict]
    builtin: dict = field(default_factory=dict)
    others: dict = field(default_factory=dict)

    @classmethod
    def load(cls, study: Study, *, gold_dir: Path | None, reward_model_dir: Path | None) -> PointwiseJudges:
        from dpolab.judges import GoldJudge, VaderJudge

        specs = study.section("judges")
        names = study.pointwise_judges
        builtin = {"gold": GoldJudge.load(Path(gold_dir)), "vader": VaderJudge()} if not study.preferences else {}
        others = {
            name: make_judge(
                name,
                specs[name],
                reward_model_dir=reward_model_dir,
                reward_model_max_length=study.reward_model.max_length,
            )
            for name in names
            if specs[name]["kind"] not in ("gold", "vader")
        }
        return cls(
            {name: specs[name]["kind"] for name in names}, {name: specs[name] for name in names}, builtin, others
        )

    def score(self, samples: pd.DataFrame, instructions: list[str] | None, reward_judge: str) -> pd.DataFrame:
        """`samples` with gold_score/vader_score (IMDb), score_<judge> for every pointwise judge,
        completion_tokens, chars, and reward_score (gold's in the IMDb miniature, else `reward_judge`'s)."""
        prompts, completions = samples["prompt"].tolist(), samples["completion"].tolist()
        by_kind = {kind: judge.score(prompts, completions) for kind, judge in self.builtin.items()}
        scored = samples.assign(
            **{f"{kind}_score": values for kind, values in by_kind.items()},
            completion_tokens=samples["completion_token_ids"].str.len(),
            chars=samples["completion"].str.len(),
            **{
                f"score_{name}": by_kind[kind]
                if name not in self.others
                else self.others[name].score(prompts_for(self.specs[name], prompts, instructions), completions)
                for name, kind in self.kinds.items()
            },
        )
        scored["reward_score"] = scored["gold_score"] if "gold" in by_kind else scored[f"score_{reward_judge}"]
        return scored

    @property
    def score_columns(self) -> list[str]:
        return [f"{kind}_score" for kind in self.builtin] + [f"score_{name}" for name in self.kinds]


def evaluate_one(
    study: Study,
    policy: str,
    *,
    prompts_file: Path,
    samples_files: list[Path],
    metrics_files: list[Path],
    scored_files: list[Path],
    gold_dir: Path | None = None,
    reward_model_dir: Path | None = None,
    log: bool = True,
) -> list[dict]:
    """Score and evaluate one policy at each temperature (files in the order of study.temperatures):
    metrics.json and scored.parquet per temperature; with `log`, the metrics at the policy's training
    step and the scored samples to the active MLflow run. Returns the metrics."""
    import mlflow

    ev = study.evaluation
    identity, _ = policy_identity(study, policy)
    judges = PointwiseJudges.load(study, gold_dir=gold_dir, reward_model_dir=reward_model_dir)
    test_prompts = pd.read_parquet(prompts_file)
    instruction = test_prompts.set_index("prompt_id")["instruction"] if "instruction" in test_prompts else None
    found = []
    for temperature, samples_file, metrics_file, scored_file in zip(
        study.temperatures, samples_files, metrics_files, scored_files, strict=True
    ):
        samples = read_samples(samples_file).assign(temperature=float(temperature))
        instructions = instruction.loc[samples["prompt_id"]].tolist() if instruction is not None else None
        samples = judges.score(samples, instructions, study.reward_judge)
        policy_logps, reference_logps = sample_logps(samples, samples_file)
        metrics = evaluate_policy(
            samples,
            policy_logps=policy_logps,
            reference_logps=reference_logps,
            resamples=ev.bootstrap_resamples,
            confidence=ev.confidence_level,
            seed=ev.seed,
        )
        metrics = {"policy": policy, **identity, "temperature": float(temperature), **metrics}
        Path(metrics_file).write_text(json.dumps(metrics, indent=2))
        samples.assign(policy=policy).drop(columns=["prompt_token_ids", "completion_token_ids"]).to_parquet(
            scored_file, index=False
        )
        found.append(metrics)
        if log:
            values = {
                k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k not in (*identity, "temperature")
            }
            # at the policy's training step: a policy's checkpoints and its final evaluation line up in MLflow
            mlflow.log_metrics(
                {f"{k}/temp_{float(temperature):g}": v for k, v in values.items()}, step=identity["step"]
            )
            mlflow.log_table(
                samples[["prompt_id", "prompt", "completion", *judges.score_columns, "completion_tokens"]],
                f"generations_scored/temp_{float(temperature):g}.json",
            )
    return found
