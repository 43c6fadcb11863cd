"""Evaluation of one policy at one temperature: reward (bootstrap CI), VADER, KL to the
reference estimated on the policy's own samples, and response lengths; plus the helpers the
study-wide comparison (dpolab.compare, dpolab.winrate) shares. No torch here: the log-probs
arrive with the samples (the generate job scores them), so an evaluate job loads no model."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


def bootstrap_ci(values, *, resamples: int, confidence: float, seed: int) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (scipy.stats.bootstrap). Constant data -> a point."""
    values = np.asarray(values, dtype=np.float64)
    if np.all(values == values[0]):
        return float(values[0]), float(values[0])
    result = stats.bootstrap(
        (values,),
        np.mean,
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def kl_estimate(policy_logps, reference_logps) -> float:
    """Monte-Carlo KL(policy || reference): mean over samples y ~ policy of the summed
    log-ratio log pi(y|x) - log ref(y|x)."""
    return float(np.mean(np.asarray(policy_logps) - np.asarray(reference_logps)))


def sample_logps(samples: pd.DataFrame, source) -> tuple[np.ndarray, np.ndarray]:
    """The policy and reference log-probs a generate job wrote with each sample."""
    missing = [c for c in ("policy_logps", "reference_logps") if c not in samples]
    if missing:
        raise ValueError(
            f"{source}: no {' or '.join(missing)} column: samples written by an older dpolab; "
            "rerun the generate rule (snakemake --forcerun generate)"
        )
    return samples["policy_logps"].to_numpy(np.float64), samples["reference_logps"].to_numpy(np.float64)


def evaluate_policy(
    samples: pd.DataFrame,
    *,
    policy_logps: np.ndarray,
    reference_logps: np.ndarray,
    resamples: int,
    confidence: float,
    seed: int,
) -> dict:
    """Metrics for one (policy, temperature) that need no other policy: the reward (the gold
    classifier's in the IMDb miniature, else the study's score judge) with its bootstrap CI, VADER
    (IMDb), KL to the reference, lengths. `samples` carries reward_score (or gold_score), optionally
    vader_score, completion_tokens and completion per prompt. Win rates are study-wide
    (dpolab.compare), since they pair each policy with SFT and fit across policies."""
    reward = samples["reward_score"] if "reward_score" in samples else samples["gold_score"]
    reward_ci = bootstrap_ci(reward, resamples=resamples, confidence=confidence, seed=seed)
    return {
        "n": int(len(samples)),
        "reward_mean": float(reward.mean()),
        "reward_ci_low": reward_ci[0],
        "reward_ci_high": reward_ci[1],
        "vader_mean": float(samples["vader_score"].mean()) if "vader_score" in samples else float("nan"),
        "kl_mean": kl_estimate(policy_logps, reference_logps),
        "length_mean": float(samples["completion_tokens"].mean()),
        "length_median": float(samples["completion_tokens"].median()),
        "chars_mean": float(samples["completion"].str.len().mean()),
    }
