"""The compare stage's job: every judge's verdicts on every policy (pointwise judges' scores from the
evaluate jobs, pairwise judges' verdicts from the pairwise_judge jobs) joined into one judgments
table, then win rates, LC win rates and the length analysis (dpolab.compare), written and logged."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from dpolab.compare import (
    CompareSettings,
    dataset_responses,
    length_analysis,
    outcome_table,
    pairwise_judgments,
    pointwise_judgments,
    score_table,
    win_rates,
)
from dpolab.study import Study


@dataclass(frozen=True)
class CompareOutputs:
    judgments: Path
    scores: Path
    outcomes: Path
    lc_draws: Path
    win_rates: Path
    length: Path


def chosen_scores(
    study: Study, name: str, chosen: pd.Series, chosen_prompts: pd.DataFrame, *, gold_dir=None, reward_model_dir=None
) -> pd.Series | None:
    """Pointwise judge `name`'s scores of the dataset's chosen responses (`chosen` by prompt_id,
    `chosen_prompts` their prompts' rows; None without any): the policies' win rate against the
    dataset compares with them."""
    from dpolab.judge_factory import make_judge, prompts_for

    if not len(chosen):
        return None
    spec = study.section("judges")[name]
    # what chat-template judges read
    instructions = chosen_prompts["instruction"].tolist() if "instruction" in chosen_prompts else None
    judge = make_judge(
        name,
        spec,
        gold_dir=gold_dir,
        reward_model_dir=reward_model_dir,
        reward_model_max_length=study.reward_model.max_length,
    )
    return pd.Series(
        judge.score(prompts_for(spec, chosen_prompts["prompt"].tolist(), instructions), chosen.tolist()),
        index=chosen.index,
    )


def all_judgments(
    study: Study,
    scored: pd.DataFrame,
    prompts: pd.DataFrame,
    pairwise_files: list[Path],
    *,
    gold_dir=None,
    reward_model_dir=None,
) -> pd.DataFrame:
    """One table of every judge's preference for each policy over each opponent (SFT, chosen): the
    pointwise judges' from their scores, the pairwise judges' from their verdicts (files in the
    order of study.pairwise_judges)."""
    chosen = dataset_responses(prompts)
    chosen_prompts = prompts.set_index("prompt_id").loc[chosen.index]
    frames = [
        pointwise_judgments(
            scored,
            name,
            chosen_scores(study, name, chosen, chosen_prompts, gold_dir=gold_dir, reward_model_dir=reward_model_dir),
        )
        for name in study.pointwise_judges
    ]
    frames += [
        pairwise_judgments(pd.read_parquet(f), scored, name)
        for name, f in zip(study.pairwise_judges, pairwise_files, strict=True)
    ]
    return pd.concat(frames, ignore_index=True)


def compare_study(
    study: Study,
    *,
    scored_files: list[Path],
    pairwise_files: list[Path],
    prompts_file: Path,
    pair_stats_file: Path,
    policies: list[str],
    outputs: CompareOutputs,
    gold_dir=None,
    reward_model_dir=None,
    log: bool = True,
) -> pd.DataFrame:
    """Write judgments, scores, per-prompt outcomes, the LC fits' draws, win rates and the length
    analysis; with `log`, to the active MLflow run too. Returns the win rates."""
    import mlflow

    settings = CompareSettings.from_config(study.section("evaluation"))
    scored = pd.concat([pd.read_parquet(f) for f in scored_files], ignore_index=True)
    prompts = pd.read_parquet(prompts_file)
    judgments = all_judgments(
        study, scored, prompts, pairwise_files, gold_dir=gold_dir, reward_model_dir=reward_model_dir
    )
    scores = score_table(scored, study.pointwise_judges)
    rates, lc_draws = win_rates(judgments, scores, settings, policies, return_lc_draws=True)
    analysis = length_analysis(scored, scores, json.loads(Path(pair_stats_file).read_text()), rates)
    judgments.to_parquet(outputs.judgments, index=False)
    scores.to_parquet(outputs.scores, index=False)
    outcome_table(scored).to_parquet(outputs.outcomes, index=False)
    lc_draws.to_parquet(outputs.lc_draws, index=False)
    rates.to_csv(outputs.win_rates, index=False)
    Path(outputs.length).write_text(json.dumps(analysis, indent=2))
    print(rates.to_string(index=False))
    if log:
        mlflow.log_table(rates, "win_rates.json")
        mlflow.log_artifact(str(outputs.win_rates))
        mlflow.log_artifact(str(outputs.length))
        mlflow.log_metrics(
            {
                "chosen_longer_share": analysis["data"]["chosen_longer_share"],
                "pairs_length_difference_mean": analysis["data"]["length_difference_mean"],
            }
        )
    return rates
