"""Study-wide comparison: every policy against SFT and against the dataset's chosen responses
under every judge, win rates with paired bootstrap CIs, length-controlled win rates, position
bias of pairwise judges, and the length analysis (data side and policy side).

Inputs are the evaluate jobs' scored generations (one row per policy, temperature, prompt,
with a `score_<judge>` column per pointwise judge) and the pairwise judges' verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from dpolab.judges import position_bias, preference_from_scores
from dpolab.winrate import LCSettings, lc_win_rates, spearman, win_rate

BASELINE, CHOSEN = "sft", "chosen"
KEY = ["policy", "temperature", "prompt_id"]


@dataclass
class CompareSettings:
    resamples: int
    confidence: float
    seed: int
    lc: LCSettings

    @classmethod
    def from_config(cls, evaluation: dict) -> CompareSettings:
        lc = LCSettings(
            l2=evaluation["lc_l2"],
            difficulty_l2=evaluation["lc_difficulty_l2"],
            resamples=evaluation["lc_resamples"],
            confidence=evaluation["confidence_level"],
            seed=evaluation["seed"],
        )
        return cls(evaluation["bootstrap_resamples"], evaluation["confidence_level"], evaluation["seed"], lc)


def dataset_responses(prompts: pd.DataFrame) -> pd.Series:
    """The dataset's chosen response per prompt_id (non-empty ones); empty when the test
    prompts carry none."""
    if "chosen" not in prompts:
        return pd.Series(dtype=str)
    chosen = prompts.set_index("prompt_id")["chosen"]
    return chosen[chosen.str.strip() != ""]


def ratio_vs_sft(frame: pd.DataFrame, column: str) -> pd.Series:
    """`column` divided by SFT's value at the same temperature."""
    sft = frame[frame["policy"] == BASELINE].set_index("temperature")[column]
    return frame[column] / frame["temperature"].map(sft)


def pointwise_judgments(scored: pd.DataFrame, judge: str, chosen_scores: pd.Series | None) -> pd.DataFrame:
    """Preferences of one pointwise judge: each non-SFT policy against SFT on the same prompt
    and temperature, and every policy (SFT included) against the dataset's chosen response.
    `chosen_scores` is indexed by prompt_id (None when the dataset has no chosen responses)."""
    column = f"score_{judge}"
    frames = []
    baseline = scored[scored["policy"] == BASELINE][["temperature", "prompt_id", column, "completion_tokens"]]
    others = scored[scored["policy"] != BASELINE].merge(
        baseline, on=["temperature", "prompt_id"], suffixes=("", "_opponent"), validate="many_to_one"
    )
    frames.append(
        pd.DataFrame(
            {
                **{k: others[k] for k in KEY},
                "opponent": BASELINE,
                "preference": preference_from_scores(others[column], others[f"{column}_opponent"]),
                "length_diff": others["completion_tokens"] - others["completion_tokens_opponent"],
                "baseline_length": others[
                    "completion_tokens_opponent"
                ],  # SFT's: a covariate of the prompt's difficulty
            }
        )
    )
    if chosen_scores is not None:
        has_chosen = scored[scored["prompt_id"].isin(chosen_scores.index)]
        frames.append(
            pd.DataFrame(
                {
                    **{k: has_chosen[k] for k in KEY},
                    "opponent": CHOSEN,
                    "preference": preference_from_scores(
                        has_chosen[column], chosen_scores.loc[has_chosen["prompt_id"]].to_numpy()
                    ),
                    # the chosen text is not tokenised by the policy; length control is against SFT
                    "length_diff": np.nan,
                    "baseline_length": np.nan,
                }
            )
        )
    return pd.concat(frames, ignore_index=True).assign(judge=judge)


def pairwise_judgments(verdicts: pd.DataFrame, scored: pd.DataFrame, judge: str) -> pd.DataFrame:
    """A pairwise judge's verdict table (policy, temperature, prompt_id, opponent, preference,
    verdict_in_order, verdict_swapped) with the token length difference against SFT added."""
    lengths = scored[KEY + ["completion_tokens"]]
    baseline = (
        lengths[lengths["policy"] == BASELINE]
        .drop(columns="policy")
        .rename(columns={"completion_tokens": "opponent_tokens"})
    )
    table = verdicts.merge(lengths, on=KEY, how="left", validate="many_to_one").merge(
        baseline, on=["temperature", "prompt_id"], how="left", validate="many_to_one"
    )
    against_sft = table["opponent"] == BASELINE
    table["length_diff"] = np.where(against_sft, table["completion_tokens"] - table["opponent_tokens"], np.nan)
    table["baseline_length"] = np.where(against_sft, table["opponent_tokens"], np.nan)
    return table.drop(columns=["completion_tokens", "opponent_tokens"]).assign(judge=judge)


def win_rates(
    judgments: pd.DataFrame,
    scores: pd.DataFrame,
    settings: CompareSettings,
    policies: list[str],
    *,
    return_lc_draws: bool = False,
):
    """One row per (judge, policy, temperature): win rate vs SFT and its CI, LC win rate and
    its CI, win rate vs the dataset's chosen responses and its CI, position bias (pairwise
    judges), and how score and preference follow length. SFT's own row has 0.5 against
    itself by definition. With `return_lc_draws`, also the LC fits' bootstrap draws (judge,
    temperature, policy, draw, lc_win_rate) for the seed aggregation."""
    score_length = {
        key: spearman(part["score"], part["completion_tokens"])
        for key, part in scores.groupby(["judge", "policy", "temperature"], sort=False)
    }
    rows, lc_draws = [], []
    for (judge, temperature), at_t in judgments.groupby(["judge", "temperature"], sort=False):
        vs_sft = at_t[at_t["opponent"] == BASELINE]
        columns = ["policy", "prompt_id", "preference", "length_diff"] + (
            ["baseline_length"] if "baseline_length" in vs_sft else []
        )
        lc, draws = lc_win_rates(vs_sft[columns], settings.lc, return_draws=True)
        lc = lc.set_index("policy")
        lc_draws.append(draws.assign(judge=judge, temperature=float(temperature)))
        for policy in policies:
            row = {"judge": judge, "policy": policy, "temperature": float(temperature)}
            mine = at_t[at_t["policy"] == policy]
            against_sft = mine[mine["opponent"] == BASELINE]
            if policy == BASELINE:
                row.update(
                    win_rate=0.5,
                    win_rate_ci_low=0.5,
                    win_rate_ci_high=0.5,
                    lc_win_rate=0.5,
                    lc_win_rate_ci_low=0.5,
                    lc_win_rate_ci_high=0.5,
                    lc_length_coef=0.0,
                )
            elif len(against_sft):
                rate, low, high = win_rate(
                    against_sft["preference"],
                    resamples=settings.resamples,
                    confidence=settings.confidence,
                    seed=settings.seed,
                )
                row.update(
                    win_rate=rate,
                    win_rate_ci_low=low,
                    win_rate_ci_high=high,
                    preference_length_spearman=spearman(against_sft["preference"], against_sft["length_diff"]),
                    **lc.loc[
                        policy, ["lc_win_rate", "lc_win_rate_ci_low", "lc_win_rate_ci_high", "lc_length_coef"]
                    ].to_dict(),
                )
            against_chosen = mine[mine["opponent"] == CHOSEN]
            if len(against_chosen):
                rate, low, high = win_rate(
                    against_chosen["preference"],
                    resamples=settings.resamples,
                    confidence=settings.confidence,
                    seed=settings.seed + 1,
                )
                row.update(win_rate_vs_chosen=rate, win_rate_vs_chosen_ci_low=low, win_rate_vs_chosen_ci_high=high)
            if "verdict_in_order" in mine and mine["verdict_in_order"].notna().any():
                decided = pd.concat([mine["verdict_in_order"], mine["verdict_swapped"]]).dropna()
                bias = position_bias(decided)
                row.update(first_slot_share=bias["first_slot_share"], tie_share=bias["tie_share"])
            if (judge, policy, temperature) in score_length:
                row["score_length_spearman"] = score_length[(judge, policy, temperature)]
            rows.append(row)
    if not return_lc_draws:
        return pd.DataFrame(rows)
    columns = ["judge", "temperature", "policy", "draw", "lc_win_rate"]
    return pd.DataFrame(rows), (
        pd.concat(lc_draws, ignore_index=True)[columns] if lc_draws else pd.DataFrame(columns=columns)
    )


def score_table(scored: pd.DataFrame, judges: list[str]) -> pd.DataFrame:
    """Long table of pointwise scores: policy, temperature, prompt_id, judge, score, lengths."""
    keep = KEY + ["completion_tokens", "chars"]
    frames = [scored[keep].assign(judge=j, score=scored[f"score_{j}"]) for j in judges]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=keep + ["judge", "score"])


def length_analysis(scored: pd.DataFrame, scores: pd.DataFrame, pair_stats: dict, rates: pd.DataFrame) -> dict:
    """Data side (the preference pairs), policy side (lengths against SFT per temperature),
    judge side (Spearman of score and length over all generations) and the LC fits' length terms."""
    lengths = (
        scored.groupby(["policy", "temperature"], sort=False)
        .agg(tokens_mean=("completion_tokens", "mean"), chars_mean=("chars", "mean"))
        .reset_index()
    )
    lengths["tokens_ratio_vs_sft"] = ratio_vs_sft(lengths, "tokens_mean")
    lengths["chars_ratio_vs_sft"] = ratio_vs_sft(lengths, "chars_mean")
    judge_side = {
        f"{judge}/temp_{temperature:g}": spearman(rows["score"], rows["completion_tokens"])
        for (judge, temperature), rows in scores.groupby(["judge", "temperature"], sort=False)
    }
    return {
        "data": {
            k: pair_stats[k]
            for k in ("pairs", "chosen_longer_share", "length_difference_mean", "relabelled_for_length")
        },
        "policies": lengths.to_dict(orient="records"),
        "score_length_spearman": judge_side,
        "lc_length_coef": rates[["judge", "policy", "temperature", "lc_length_coef"]]
        .dropna()
        .to_dict(orient="records"),
    }


def outcome_table(scored: pd.DataFrame) -> pd.DataFrame:
    """One row per (policy, temperature, prompt_id) with what the seed aggregation averages
    (dpolab.aggregate): the reward, the sample's log-ratio to the reference (its mean is the KL
    estimate) and the response's length in tokens and characters."""
    return pd.DataFrame(
        {
            **{k: scored[k] for k in KEY},
            "reward": scored["reward_score"].astype(np.float64),
            "kl": scored["policy_logps"].astype(np.float64) - scored["reference_logps"].astype(np.float64),
            "completion_tokens": scored["completion_tokens"],
            "chars": scored["chars"],
        }
    )
