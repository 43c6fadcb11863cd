"""dpolab.simulate: simulated judgments against SFT with a known truth. Pinned: the frame's
columns and shape (one row per policy and prompt, preferences 0/1, length differences against
the rounded SFT length), that a seed decides the frame (same seed: identical; another: different),
the shipped scenarios, and that the true length-controlled win rates are one probability per
policy, ordered as the policies' strengths and seeded."""

import numpy as np
import pandas as pd
import pytest

from dpolab.simulate import SCENARIOS, Scenario, simulate_judgments, true_lc_win_rates

SMALL = Scenario("small", prompts=20)


def test_frame_has_one_row_per_policy_and_prompt_with_the_documented_columns():
    frame = simulate_judgments(SMALL, seed=0)
    assert list(frame.columns) == ["policy", "prompt_id", "preference", "length_diff", "baseline_length"]
    assert len(frame) == len(SMALL.strengths) * SMALL.prompts
    assert frame["policy"].unique().tolist() == ["p0", "p1", "p2", "p3"]
    assert (frame.groupby("policy")["prompt_id"].apply(list) == [list(range(20))] * 4).all()
    assert set(frame["preference"].unique()) <= {0.0, 1.0}
    assert frame.index.tolist() == list(range(len(frame)))  # ignore_index: one clean index


def test_lengths_are_whole_tokens_and_the_baseline_is_shared_by_every_policy():
    frame = simulate_judgments(SMALL, seed=1)
    assert (frame["baseline_length"] == frame["baseline_length"].round()).all()
    assert (frame["length_diff"] == frame["length_diff"].round()).all()
    assert (frame["baseline_length"] + frame["length_diff"] >= 1).all()  # a policy answers with at least one token
    baselines = frame.pivot(index="prompt_id", columns="policy", values="baseline_length")
    assert (baselines.nunique(axis=1) == 1).all()


def test_same_seed_gives_the_identical_frame_and_another_seed_a_different_one():
    first = simulate_judgments(SMALL, seed=7)
    pd.testing.assert_frame_equal(first, simulate_judgments(SMALL, seed=7))
    other = simulate_judgments(SMALL, seed=8)
    assert not first[["preference", "length_diff"]].equals(other[["preference", "length_diff"]])


def test_shorter_and_longer_policies_differ_in_length_as_their_ratios_say():
    frame = simulate_judgments(Scenario("long", prompts=300), seed=0)
    mean_diff = frame.groupby("policy")["length_diff"].mean()
    assert mean_diff["p0"] < 0 < mean_diff["p2"]  # length ratios 0.7 and 1.4 of the SFT answer


def test_shipped_scenarios_are_named_by_their_keys():
    assert set(SCENARIOS) == {"independent", "difficulty_follows_baseline_length", "strong_length_preference"}
    assert all(scenario.name == name for name, scenario in SCENARIOS.items())
    assert SCENARIOS["difficulty_follows_baseline_length"].difficulty_length_coupling == 0.8
    assert SCENARIOS["strong_length_preference"].length_effects == (1.5,) * 4


def test_true_win_rates_are_one_probability_per_policy_ordered_by_strength():
    scenario = SCENARIOS["independent"]
    truth = true_lc_win_rates(scenario, draws=2000)
    assert truth.shape == (len(scenario.strengths),)
    assert ((truth > 0) & (truth < 1)).all()
    assert np.argsort(truth).tolist() == np.argsort(scenario.strengths).tolist()
    assert truth[0] == pytest.approx(0.5, abs=0.03)  # strength 0, difficulty centred at 0


def test_true_win_rates_are_seeded():
    scenario = SCENARIOS["difficulty_follows_baseline_length"]
    np.testing.assert_array_equal(true_lc_win_rates(scenario, draws=1000), true_lc_win_rates(scenario, draws=1000))
    assert not np.array_equal(true_lc_win_rates(scenario, draws=1000, seed=1), true_lc_win_rates(scenario, draws=1000))
