"""Study-wide comparison on a small hand-made study: two policies and SFT, one judge."""

import numpy as np
import pandas as pd
import pytest

from dpolab.compare import (
    CompareSettings,
    length_analysis,
    pairwise_judgments,
    pointwise_judgments,
    score_table,
    win_rates,
)
from dpolab.winrate import LCSettings
from helpers.examples import COMPARE_PROMPTS, scored_samples

SETTINGS = CompareSettings(resamples=200, confidence=0.95, seed=0, lc=LCSettings(resamples=20))
POLICIES = ["sft", "variant~a/beta~0.1/seed~0", "variant~b/beta~0.1/seed~0"]


def test_pointwise_judgments_pair_each_policy_with_sft_on_the_same_prompt():
    scored = scored_samples(np.random.default_rng(0))
    chosen = pd.Series(np.full(COMPARE_PROMPTS, 0.5), index=np.arange(COMPARE_PROMPTS))
    table = pointwise_judgments(scored, "gold", chosen)
    vs_sft = table[table["opponent"] == "sft"]
    assert (
        len(vs_sft) == 2 * 2 * COMPARE_PROMPTS
    )  # two policies x two temperatures x prompts; SFT is not compared with itself
    row = vs_sft.iloc[5]
    mine = scored.set_index(["policy", "temperature", "prompt_id"])
    own = mine.loc[(row["policy"], row["temperature"], row["prompt_id"])]
    base = mine.loc[("sft", row["temperature"], row["prompt_id"])]
    assert row["preference"] == (1.0 if own["score_gold"] > base["score_gold"] else 0.0)
    assert row["length_diff"] == own["completion_tokens"] - base["completion_tokens"]
    assert len(table[table["opponent"] == "chosen"]) == 3 * 2 * COMPARE_PROMPTS  # SFT too


def test_win_rates_table():
    scored = scored_samples(np.random.default_rng(1))
    chosen = pd.Series(np.full(COMPARE_PROMPTS, 0.5), index=np.arange(COMPARE_PROMPTS))
    judgments = pointwise_judgments(scored, "gold", chosen)
    scores = score_table(scored, ["gold"])
    rates = win_rates(judgments, scores, SETTINGS, POLICIES).set_index(["policy", "temperature"])
    assert len(rates) == 6
    a = rates.loc[("variant~a/beta~0.1/seed~0", 1.0)]
    raw = judgments[
        (judgments["policy"] == "variant~a/beta~0.1/seed~0")
        & (judgments["temperature"] == 1.0)
        & (judgments["opponent"] == "sft")
    ]
    assert a["win_rate"] == pytest.approx(raw["preference"].mean())
    assert a["win_rate_ci_low"] <= a["win_rate"] <= a["win_rate_ci_high"]
    assert a["lc_win_rate_ci_low"] <= a["lc_win_rate"] <= a["lc_win_rate_ci_high"]
    assert rates.loc[("sft", 0.0), "win_rate"] == 0.5
    assert 0 <= a["win_rate_vs_chosen"] <= 1
    assert np.isfinite(a["score_length_spearman"])


def test_pairwise_verdicts_get_lengths_and_position_bias():
    scored = scored_samples(np.random.default_rng(2))
    policy = "variant~a/beta~0.1/seed~0"
    verdicts = pd.DataFrame(
        {
            "policy": policy,
            "temperature": 1.0,
            "prompt_id": np.arange(COMPARE_PROMPTS),
            "opponent": "sft",
            "verdict_in_order": ["first"] * COMPARE_PROMPTS,
            "verdict_swapped": ["first"] * (COMPARE_PROMPTS // 2) + ["second"] * (COMPARE_PROMPTS // 2),
        }
    )
    verdicts["preference"] = np.where(verdicts["verdict_swapped"] == "second", 1.0, 0.5)
    table = pairwise_judgments(verdicts, scored, "llm")
    mine = scored[(scored["policy"] == policy) & (scored["temperature"] == 1.0)]["completion_tokens"].to_numpy()
    base = scored[(scored["policy"] == "sft") & (scored["temperature"] == 1.0)]["completion_tokens"].to_numpy()
    assert table["length_diff"].tolist() == (mine - base).tolist()
    rates = win_rates(table, score_table(scored, []), SETTINGS, ["sft", policy]).set_index("policy")
    assert rates.loc[policy, "first_slot_share"] == pytest.approx(0.75)
    assert rates.loc[policy, "win_rate"] == pytest.approx(0.75)


def test_length_analysis():
    scored = scored_samples(np.random.default_rng(3))
    judgments = pointwise_judgments(scored, "gold", None)
    scores = score_table(scored, ["gold"])
    rates = win_rates(judgments, scores, SETTINGS, POLICIES)
    stats = {
        "pairs": 10,
        "chosen_longer_share": 0.7,
        "length_difference_mean": 3.0,
        "relabelled_for_length": 2,
        "other": 1,
    }
    analysis = length_analysis(scored, scores, stats, rates)
    assert analysis["data"]["chosen_longer_share"] == 0.7
    policies = pd.DataFrame(analysis["policies"]).set_index(["policy", "temperature"])
    assert policies.loc[("sft", 1.0), "tokens_ratio_vs_sft"] == 1.0
    assert policies.loc[("variant~a/beta~0.1/seed~0", 1.0), "tokens_ratio_vs_sft"] > 1.3
    assert set(analysis["score_length_spearman"]) == {"gold/temp_0", "gold/temp_1"}
