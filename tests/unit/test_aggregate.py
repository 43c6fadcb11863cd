"""Seed aggregation and comparisons (dpolab.aggregate) on simulated studies whose truth is known:
the crossed bootstrap's coverage, paired differences found when built in and not when absent, and
the frontier comparison at matched KL."""

import numpy as np
import pandas as pd
import pytest

from dpolab.aggregate import (
    AggregateSettings,
    CrossedDraws,
    StudyTables,
    aggregate,
    checkpoint_curves,
    comparisons,
    interval,
    point_mean,
)
from helpers.examples import PROMPTS, SEEDS, logistic, metrics_rows, simulate_preferences, simulated_study


def true_rate(strength: float, prompt_sd: float = 1.0, seed_sd: float = 0.2) -> float:
    z = np.random.default_rng(123).normal(0, np.hypot(prompt_sd, seed_sd), 2_000_000)
    return float(logistic(strength + z).mean())


def nested_interval(table, rng, resamples=500, confidence=0.95):
    """The bootstrap that draws prompts anew within each drawn seed: the reference the module
    docstring measures the crossed one against."""
    seeds, prompts = table.shape
    means = [
        np.mean([table[s, rng.integers(prompts, size=prompts)].mean() for s in rng.integers(seeds, size=seeds)])
        for _ in range(resamples)
    ]
    return np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])


def test_crossed_bootstrap_covers_the_truth_about_95_percent_where_the_nested_one_falls_short():
    rng = np.random.default_rng(0)
    truth = true_rate(0.3)
    covered, nested_covered, studies = 0, 0, 300
    for study in range(studies):
        table = simulate_preferences(rng, 0.3, rng.normal(0, 1.0, PROMPTS), seeds=5)
        draws = CrossedDraws.draw(range(5), np.arange(PROMPTS), resamples=1000, seed=study)
        low, high = interval(draws.means(table), point_mean(table), 0.95)
        covered += low <= truth <= high
        if study < 100:  # the nested reference is slow (a Python loop)
            n_low, n_high = nested_interval(table, rng)
            nested_covered += n_low <= truth <= n_high
    assert 0.92 <= covered / studies <= 0.99, covered / studies
    assert nested_covered / 100 < covered / studies  # too narrow: a shared prompt's difficulty averaged away


def test_paired_difference_is_found_when_built_in_and_not_when_absent():
    rng = np.random.default_rng(1)
    found_null = found_real = 0
    studies = 200
    for study in range(studies):
        prompt_effect = rng.normal(0, 1.0, PROMPTS)
        base = simulate_preferences(rng, 0.2, prompt_effect, seeds=5)
        same = simulate_preferences(rng, 0.2, prompt_effect, seeds=5)
        better = simulate_preferences(rng, 1.2, prompt_effect, seeds=5)  # about 0.2 more wins
        draws = CrossedDraws.draw(range(5), np.arange(PROMPTS), resamples=1000, seed=study)
        null_low, null_high = interval(draws.means(same) - draws.means(base), point_mean(same) - point_mean(base), 0.95)
        real_low, _ = interval(draws.means(better) - draws.means(base), point_mean(better) - point_mean(base), 0.95)
        found_null += not null_low <= 0 <= null_high
        found_real += real_low > 0
    assert found_null / studies <= 0.08, found_null / studies  # about the nominal 5%, the crossed bootstrap errs wide
    assert found_real / studies >= 0.9, found_real / studies


def test_draws_weigh_seeds_and_prompts_and_skip_missing_values():
    table = np.array([[1.0, 0.0, np.nan], [1.0, 1.0, 1.0]])
    draws = CrossedDraws(
        seeds=(0, 1),
        prompts=np.arange(3),
        seed_counts=np.array([[2.0, 0.0], [1.0, 1.0]]),
        prompt_counts=np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 3.0]]),
    )
    # draw 0: seed 0 twice over prompts 0, 1 (2 is missing): 0.5; draw 1: seed 0 has no value at prompt 2, seed 1 has 1
    assert draws.means(table) == pytest.approx([0.5, 1.0])
    assert point_mean(table) == pytest.approx((0.5 + 1.0) / 2)
    sft = np.array([[0.0, 1.0, 1.0]])  # SFT, trained once: prompts only
    assert draws.means(sft) == pytest.approx([2 / 3, 1.0])


def test_interval_contains_its_point_estimate():
    assert interval(np.array([0.5] * 10), 0.5 + 3e-6, 0.95) == (0.5, 0.5 + 3e-6)
    low, high = interval(np.linspace(0, 1, 101), 0.5, 0.9)
    assert low == pytest.approx(0.05) and high == pytest.approx(0.95)


def test_summary_has_one_row_per_variant_beta_temperature_and_judge():
    tables = simulated_study(np.random.default_rng(2), strengths={"dpo": 0.5, "ipo": 0.0}, temperatures=(0.0, 1.0))
    summary, draws = aggregate(tables, AggregateSettings(resamples=300))
    assert len(summary) == 2 * (1 + 2 * 2)  # per temperature: SFT, 2 variants x 2 betas
    assert not summary.duplicated(["variant", "beta", "temperature", "judge"]).any()
    grid = summary[summary["variant"] != "sft"]
    assert (grid["seeds"] == SEEDS).all() and (summary["prompts"] == PROMPTS).all()
    for name, point in (
        ("reward", "reward_mean"),
        ("kl", "kl_mean"),
        ("win_rate", "win_rate"),
        ("lc_win_rate", "lc_win_rate"),
    ):
        assert (grid[f"{name}_ci_low"] <= grid[point]).all() and (grid[point] <= grid[f"{name}_ci_high"]).all(), name
        assert (grid[f"{name}_ci_high"] > grid[f"{name}_ci_low"]).all(), name
        assert (grid[f"{name}_seed_sd"] > 0).all(), name
    # the point estimate is the mean over seeds of the per-seed figures
    per_seed = tables.by_seed[tables.by_seed["variant"] == "dpo"].groupby(["beta", "temperature"])["win_rate"].mean()
    dpo = grid[grid["variant"] == "dpo"].set_index(["beta", "temperature"])["win_rate"]
    assert dpo.sort_index().to_numpy() == pytest.approx(per_seed.sort_index().to_numpy())
    sft = summary[summary["variant"] == "sft"]
    assert (sft["win_rate"] == 0.5).all() and (sft["seeds"] == 0).all() and (sft["kl_mean"] == 0).all()
    assert summary["vader_mean"].notna().all()


def test_comparisons_find_the_better_variant_at_each_beta_and_at_matched_kl():
    tables = simulated_study(np.random.default_rng(3), strengths={"dpo": 1.2, "ipo": 0.0, "cdpo": 0.0}, seeds=5)
    summary, draws = aggregate(tables, AggregateSettings(resamples=500))
    table = comparisons(tables, summary, draws, AggregateSettings(resamples=500))
    at_beta = table[(table["comparison"] == "at_beta") & (table["metric"] == "win_rate")].set_index(
        ["variant_a", "variant_b", "beta"]
    )
    assert len(at_beta) == 3 * 2  # 3 pairs x 2 betas
    for beta in (0.1, 0.5):
        assert (
            at_beta.loc[("dpo", "ipo", beta), "excludes_zero"] and at_beta.loc[("dpo", "ipo", beta), "difference"] > 0
        )
    row = at_beta.loc[("dpo", "ipo", 0.1)]
    assert row["ci_low"] <= row["difference"] <= row["ci_high"]
    assert row["difference"] == pytest.approx(row["value_a"] - row["value_b"])
    at_kl = table[table["comparison"] == "at_kl"]
    assert set(at_kl["metric"]) == {"reward"} and at_kl["kl"].gt(0).all() and at_kl["beta"].isna().all()
    dpo_ipo = at_kl[(at_kl["variant_a"] == "dpo") & (at_kl["variant_b"] == "ipo")]
    assert len(dpo_ipo) == 3 and dpo_ipo["excludes_zero"].all() and (dpo_ipo["difference"] > 0).all()
    assert (at_kl["ci_low"] <= at_kl["difference"]).all() and (at_kl["difference"] <= at_kl["ci_high"]).all()


def test_pairs_follow_the_grid_order():
    tables = simulated_study(
        np.random.default_rng(4), strengths={"dpo": 0.5, "ipo": 0.0, "cdpo": 0.2}, seeds=2, betas=(0.1,)
    )
    settings = AggregateSettings(resamples=50, variants=("dpo", "ipo", "cdpo"))
    summary, draws = aggregate(tables, settings)
    table = comparisons(tables, summary, draws, settings)
    pairs = list(dict.fromkeys(zip(table["variant_a"], table["variant_b"])))
    assert pairs == [("dpo", "ipo"), ("dpo", "cdpo"), ("ipo", "cdpo")]


def test_matched_kl_sees_through_a_shift_along_the_same_frontier():
    """Two variants on one frontier, one trained further along it (larger KL, larger reward): at
    each beta they differ, at matched KL they do not."""
    rng = np.random.default_rng(4)
    prompts, seeds = 200, 3
    by_seed, outcomes = [], []

    def curve(kl):  # the shared frontier
        return 0.3 + 0.5 * (1 - np.exp(-kl))

    base_reward = curve(0.0) + rng.normal(0, 0.05, prompts)
    outcomes.append(
        pd.DataFrame(
            {
                "policy": "sft",
                "temperature": 1.0,
                "prompt_id": np.arange(prompts),
                "reward": base_reward,
                "kl": 0.0,
                "completion_tokens": 10,
                "chars": 40,
            }
        )
    )
    by_seed.append(
        {
            "policy": "sft",
            "variant": "sft",
            "loss": "",
            "beta": np.nan,
            "seed": np.nan,
            "temperature": 1.0,
            "judge": "gold",
        }
    )
    for variant, stretch in (("near", 1.0), ("far", 2.0)):
        for beta in (0.1, 0.3, 1.0):
            for seed in range(seeds):
                kl = stretch * 0.3 / beta * rng.uniform(0.9, 1.1)
                policy = f"variant~{variant}/beta~{beta}/seed~{seed}"
                outcomes.append(
                    pd.DataFrame(
                        {
                            "policy": policy,
                            "temperature": 1.0,
                            "prompt_id": np.arange(prompts),
                            "reward": curve(kl) + rng.normal(0, 0.05, prompts),
                            "kl": kl + rng.normal(0, 0.2, prompts),
                            "completion_tokens": 10,
                            "chars": 40,
                        }
                    )
                )
                by_seed.append(
                    {
                        "policy": policy,
                        "variant": variant,
                        "loss": "dpo",
                        "beta": beta,
                        "seed": seed,
                        "temperature": 1.0,
                        "judge": "gold",
                    }
                )
    tables = StudyTables(
        pd.DataFrame(by_seed),
        pd.concat(outcomes),
        pd.DataFrame(columns=["policy", "temperature", "prompt_id", "opponent", "preference", "judge"]),
        pd.DataFrame(columns=["judge", "temperature", "policy", "draw", "lc_win_rate"]),
    )
    settings = AggregateSettings(resamples=400, matched_kl_points=4)
    summary, draws = aggregate(tables, settings)
    table = comparisons(tables, summary, draws, settings)
    at_beta = table[(table["comparison"] == "at_beta") & (table["metric"] == "reward")]
    assert set(zip(at_beta["variant_a"], at_beta["variant_b"])) == {("far", "near")}
    assert at_beta["excludes_zero"].all() and (at_beta["difference"] > 0).all()  # far above near at every beta
    at_kl = table[table["comparison"] == "at_kl"]
    # a common range: up to the near variant's largest KL (about 3), so the largest matched KL is about 3
    assert at_kl["kl"].max() == pytest.approx(summary.loc[summary["variant"] == "near", "kl_mean"].max())
    # the chords of a concave curve through more points lie closer to it: at most a small difference left
    assert at_kl["difference"].abs().max() < 0.04, at_kl[["kl", "difference", "ci_low", "ci_high"]]


def test_variance_components_recover_simulated_seed_and_prompt_effects():
    from dpolab.aggregate import variance_components

    rng = np.random.default_rng(11)
    seeds, prompts = 40, 300
    table = (
        0.1 + rng.normal(0, 0.3, (seeds, 1)) + rng.normal(0, 0.5, (1, prompts)) + rng.normal(0, 0.2, (seeds, prompts))
    )
    found = variance_components(table)
    assert found.seed == pytest.approx(0.09, rel=0.35) and found.prompt == pytest.approx(0.25, rel=0.2)
    assert found.residual == pytest.approx(0.04, rel=0.05)
    # more seeds narrow the interval towards the prompts-only floor, never below it
    widths = [found.half_width(s) for s in (1, 2, 4, 8)]
    assert widths == sorted(widths, reverse=True)
    assert widths[-1] > found.half_width(10**9) == pytest.approx(1.96 * np.sqrt(found.prompt / prompts), rel=1e-3)
    with pytest.raises(ValueError, match="at least 2 seeds x 2 prompts"):
        variance_components(table[:1])


def test_curves_average_seeds_at_each_step_and_start_at_sft():
    by_seed, curves = checkpoint_curves(metrics_rows())
    assert len(by_seed) == 2 + 2 * 2 * 2 * 3
    dpo = curves[(curves["variant"] == "dpo") & (curves["temperature"] == 1.0)].set_index("step")
    assert list(dpo.index) == [1, 2, 4] and (dpo["seeds"] == 2).all()
    assert dpo.loc[2, "kl_mean"] == pytest.approx((2 * 1 + 2 * 2) / 2)
    assert dpo.loc[4, "reward_mean"] == pytest.approx(0.4 + 0.05 * 4 + 0.005)
    assert dpo.loc[4, "kl_seed_sd"] == pytest.approx(np.std([4, 8], ddof=1))
    sft = curves[curves["variant"] == "sft"]
    assert list(sft["step"]) == [0, 0] and sft["beta"].isna().all() and (sft["seeds"] == 1).all()


def test_rows_without_a_step_are_sft_at_0_or_the_last_step_else_refused():
    rows = metrics_rows()
    steps = rows.pop("step")
    _, curves = checkpoint_curves(
        rows.assign(step=steps.where(rows["policy"].str.contains("/step~"))), {"dpo": 4, "kto": 4}
    )
    assert sorted(curves["step"].unique()) == [0, 1, 2, 4]
    with pytest.raises(ValueError, match=r"the step of variant~dpo/beta~0.1/seed~0 \(metrics.json written by an older"):
        checkpoint_curves(rows.assign(step=steps.where(rows["policy"].str.contains("/step~"))), {"kto": 4})
