"""Win rates, their bootstrap intervals and the length-controlled model on simulated judgments."""

import numpy as np
import pandas as pd
import pytest
from scipy import special

from dpolab.judges import combine_orders, position_bias, preference_from_scores
from dpolab.simulate import SCENARIOS, simulate_judgments, true_lc_win_rates
from dpolab.winrate import LCSettings, fit_lc_model, lc_win_rates, spearman, win_rate


def _length_only_judgments(rng, n_prompts=150):
    """Three policies against SFT; the judge prefers the longer response and nothing else."""
    rows = []
    for policy, shift in (("longer", 6.0), ("same", 0.0), ("shorter", -3.0)):
        delta = np.round(rng.normal(shift, 5.0, size=n_prompts))
        preference = preference_from_scores(delta, 0.0)  # longer wins, equal ties, shorter loses
        rows.append(
            pd.DataFrame(
                {"policy": policy, "prompt_id": np.arange(n_prompts), "preference": preference, "length_diff": delta}
            )
        )
    return pd.concat(rows, ignore_index=True)


def test_lc_removes_a_pure_length_preference():
    frame = _length_only_judgments(np.random.default_rng(0))
    table = lc_win_rates(frame, LCSettings(resamples=50)).set_index("policy")
    assert table.loc["longer", "win_rate"] > 0.8  # the raw win rate rewards length
    for policy in ("longer", "same", "shorter"):
        assert table.loc[policy, "lc_win_rate"] == pytest.approx(0.5, abs=0.05)
    assert table.loc["longer", "lc_length_coef"] > 1.0  # the length term took the preference
    low, high = table.loc["longer", ["lc_win_rate_ci_low", "lc_win_rate_ci_high"]]
    assert low <= table.loc["longer", "lc_win_rate"] <= high and high - low < 0.3


def test_lc_keeps_a_real_quality_difference():
    rng = np.random.default_rng(1)
    n = 300
    frame = _length_only_judgments(rng, n)
    # a better policy: same length as SFT on average, preferred with logit 1.5 beyond length
    delta = np.round(rng.normal(0.0, 5.0, size=n))
    sigma = frame["length_diff"].std()
    p_win = special.expit(1.5 + 2.0 * np.tanh(delta / sigma))
    better = pd.DataFrame(
        {
            "policy": "better",
            "prompt_id": np.arange(n),
            "preference": (rng.random(n) < p_win).astype(float),
            "length_diff": delta,
        }
    )
    fit = fit_lc_model(pd.concat([frame, better], ignore_index=True), LCSettings())
    lc = fit.lc_win_rates()
    assert lc["better"] == pytest.approx(special.expit(1.5), abs=0.07)
    assert lc["longer"] == pytest.approx(0.5, abs=0.05)


def test_lc_prediction_with_zero_length_term_is_the_reported_rate():
    frame = _length_only_judgments(np.random.default_rng(2), 60)
    fit = fit_lc_model(frame, LCSettings())
    index = fit.policies.index("longer")
    zero = fit.predicted(np.full(len(fit.prompts), index), np.arange(len(fit.prompts)), np.zeros(len(fit.prompts)))
    assert fit.lc_win_rates()["longer"] == pytest.approx(zero.mean())


def test_bootstrap_interval_covers_the_true_win_rate_about_95_percent():
    """200 simulated studies of 100 prompts with a known win probability and ties."""
    rng = np.random.default_rng(7)
    p_win, p_tie = 0.55, 0.1
    true_rate = p_win + 0.5 * p_tie
    covered = 0
    for study in range(200):
        draw = rng.random(100)
        outcomes = np.where(draw < p_win, 1.0, np.where(draw < p_win + p_tie, 0.5, 0.0))
        _, low, high = win_rate(outcomes, resamples=1000, confidence=0.95, seed=study)
        covered += low <= true_rate <= high
    coverage = covered / 200
    assert 0.90 <= coverage <= 0.99, coverage


def test_ties_count_half():
    assert win_rate([1.0, 0.5, 0.0, 1.0], resamples=200, confidence=0.95, seed=0)[0] == pytest.approx(0.625)


def test_both_orders_average_out_a_slot_preference():
    # a judge that always answers "first" has no opinion once both orders are combined
    assert combine_orders(["first"] * 3, ["first"] * 3).tolist() == [0.5, 0.5, 0.5]
    # consistent verdicts: A better in both orders -> 1; B better in both -> 0; one tie -> 0.75
    assert combine_orders(["first", "second", "tie"], ["second", "first", "second"]).tolist() == [1.0, 0.0, 0.75]
    bias = position_bias(["first", "first", "first", "second", "tie"])
    assert bias == {"first_slot_share": 0.75, "tie_share": 0.2, "verdicts": 5}


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def _lc_points(scenario, studies: int, baseline_length: bool = True) -> np.ndarray:
    points = []
    for study in range(studies):
        frame = simulate_judgments(scenario, study)
        fit = fit_lc_model(frame if baseline_length else frame.drop(columns="baseline_length"), LCSettings())
        rates = fit.lc_win_rates()
        points.append([rates[f"p{i}"] for i in range(len(scenario.strengths))])
    return np.array(points)


@pytest.mark.parametrize("name", ["independent", "difficulty_follows_baseline_length"])
def test_lc_is_unbiased_when_difficulty_follows_the_baselines_length(name):
    """100 simulated studies per scenario (dpolab.simulate): the mean LC estimate of each policy
    (one 0.7x as long as SFT, one 1.4x) lands within 0.03 of the truth. Without the baseline-length
    term, the coupled scenario biases the shorter policy's LC up by about 0.1."""
    scenario = SCENARIOS[name]
    truth = true_lc_win_rates(scenario)
    bias = _lc_points(scenario, 100).mean(axis=0) - truth
    assert np.abs(bias).max() < 0.03, bias
    if name == "difficulty_follows_baseline_length":
        before = _lc_points(scenario, 100, baseline_length=False).mean(axis=0) - truth
        assert before[0] > 0.07, before  # the failure the term fixes: the shorter policy (p0) up


def test_all_ties_give_exactly_one_half():
    frame = simulate_judgments(SCENARIOS["independent"], 0).assign(preference=0.5)
    table = lc_win_rates(frame, LCSettings(resamples=20)).set_index("policy")
    assert (table["lc_win_rate"] == 0.5).all() and (table["win_rate"] == 0.5).all()
    assert (table["lc_win_rate_ci_low"] == 0.5).all() and (table["lc_win_rate_ci_high"] == 0.5).all()


def test_every_lc_interval_contains_its_point_estimate():
    for study in range(10):
        frame = simulate_judgments(SCENARIOS["strong_length_preference"], study)
        table = lc_win_rates(frame, LCSettings(resamples=20, seed=study))
        assert (
            (table["lc_win_rate_ci_low"] <= table["lc_win_rate"])
            & (table["lc_win_rate"] <= table["lc_win_rate_ci_high"])
        ).all()
