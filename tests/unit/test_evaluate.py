import numpy as np
import pandas as pd
import pytest

from dpolab.evaluate import bootstrap_ci, evaluate_policy, kl_estimate


def test_kl_estimate_is_mean_summed_log_ratio():
    assert kl_estimate([-10.0, -4.0], [-12.0, -5.0]) == pytest.approx(1.5)
    assert kl_estimate([-3.0, -2.0], [-3.0, -2.0]) == 0.0


def test_bootstrap_ci_brackets_mean_and_degenerates_on_constant_data():
    values = np.random.default_rng(0).normal(1.0, 1.0, size=400)
    low, high = bootstrap_ci(values, resamples=1000, confidence=0.95, seed=0)
    assert low < values.mean() < high
    # standard error 0.05: a 95% interval is about +-0.1 wide
    assert 0.15 < high - low < 0.25
    assert bootstrap_ci(np.full(10, 0.5), resamples=1000, confidence=0.95, seed=0) == (0.5, 0.5)


def _samples(scores, lengths):
    n = len(scores)
    return pd.DataFrame(
        {
            "prompt_id": range(n),
            "gold_score": scores,
            "vader_score": [0.0] * n,
            "completion_tokens": lengths,
            "completion": ["x" * k for k in lengths],
        }
    )


def test_evaluate_policy_arithmetic():
    policy = _samples([0.9, 0.8, 0.2, 0.5], [10, 20, 30, 40])
    metrics = evaluate_policy(
        policy,
        policy_logps=np.array([-1.0, -2.0, -3.0, -4.0]),
        reference_logps=np.array([-2.0, -2.0, -4.0, -4.0]),
        resamples=500,
        confidence=0.95,
        seed=0,
    )
    assert metrics["reward_mean"] == pytest.approx(0.6)
    assert metrics["kl_mean"] == pytest.approx(0.5)
    assert metrics["length_mean"] == 25 and metrics["length_median"] == 25
    assert metrics["reward_ci_low"] <= metrics["reward_mean"] <= metrics["reward_ci_high"]


def test_samples_without_log_probs_name_the_file_and_the_fix():
    import pandas as pd

    from dpolab.evaluate import sample_logps

    with pytest.raises(
        ValueError, match=r"old\.jsonl: no policy_logps or reference_logps column.*rerun the generate rule"
    ):
        sample_logps(pd.DataFrame({"completion": ["x"]}), "old.jsonl")
    policy, reference = sample_logps(pd.DataFrame({"policy_logps": [-1.0], "reference_logps": [-2.0]}), "new.jsonl")
    assert (policy.tolist(), reference.tolist()) == ([-1.0], [-2.0])
