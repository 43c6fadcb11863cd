"""Evaluation of one policy at one temperature: reward (bootstrap CI), VADER, KL to the
reference estimated on the policy's own samples, and response lengths; plus the helpers the
study-wide comparison (dpolab.compare, dpolab.winrate) shares."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy import stats


def bootstrap_ci(values, *, resamples: int, confidence: float, seed: int) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (scipy.stats.bootstrap). Constant data -> a point."""
    values = np.asarray(values, dtype=np.float64)
    if np.all(values == values[0]):
        return float(values[0]), float(values[0])
    result = stats.bootstrap(
        (values,), np.mean, n_resamples=resamples, confidence_level=confidence, method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def kl_estimate(policy_logps, reference_logps) -> float:
    """Monte-Carlo KL(policy || reference): mean over samples y ~ policy of the summed
    log-ratio log pi(y|x) - log ref(y|x)."""
    return float(np.mean(np.asarray(policy_logps) - np.asarray(reference_logps)))


@torch.no_grad()
def completion_logps(model, prompt_ids: list[list[int]], completion_ids: list[list[int]], batch_size: int = 32) -> np.ndarray:
    """Summed log-probs of each completion given its prompt, on the exact sampled token ids."""
    model.eval()
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    out = []
    for start in range(0, len(prompt_ids), batch_size):
        rows = [p + c for p, c in zip(prompt_ids[start : start + batch_size], completion_ids[start : start + batch_size])]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            attention[i, : len(r)] = 1
        logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
        token_logps = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        for i, (p, c) in enumerate(zip(prompt_ids[start : start + batch_size], completion_ids[start : start + batch_size])):
            # token t+1 is predicted at position t: completion tokens sit at positions len(p)..len(p)+len(c)-1
            out.append(float(token_logps[i, len(p) - 1 : len(p) - 1 + len(c)].sum()))
    return np.array(out)


def evaluate_policy(samples: pd.DataFrame, *, policy_logps: np.ndarray, reference_logps: np.ndarray,
                    resamples: int, confidence: float, seed: int) -> dict:
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
