"""Win rates and length control, study-wide.

- Win rates of every policy against SFT (and against the dataset's chosen responses) under
  every judge: ties count half; the 95% CI is a paired bootstrap over prompts (each prompt's
  outcome already pairs the two responses to it).
- The length-controlled (LC) win rate in the manner of AlpacaEval 2 (Dubois et al. 2024):
  a logistic model of the judge's preference for policy m over SFT on prompt x,

      logit P(m beats SFT on x) = theta_m + phi_m * tanh(delta_mx / sigma) + psi * b_x + gamma_x,

  where delta_mx is m's response length minus SFT's on x (tokens), sigma the standard
  deviation of all delta in the fit (every policy of the study at one temperature, under one
  judge), theta_m the policy's length-free strength, phi_m its length effect, and psi * b_x +
  gamma_x the prompt's difficulty, shared by all policies: b_x = tanh of SFT's standardised
  response length on x, and gamma_x the rest. Targets are the judge's preferences in [0, 1]
  (ties 0.5, two-order LLM verdicts 0.25/0.75), fitted by penalised maximum likelihood
  (L2 weight `difficulty_l2` on gamma, `l2` on theta, phi and psi). The LC win rate is the
  model's prediction with the length term set to zero, averaged over prompts:
  mean_x sigmoid(theta_m + psi * b_x + gamma_x). Its CI is a bootstrap over prompts that
  refits the model (widened to hold the point where the percentiles miss it by a hair).

  Why psi: gamma is shrunk (there are only a few policies per prompt to estimate it from), so
  where hard prompts are the ones SFT answers at length, the shrunk difficulty leaves that part
  to the length term (delta carries SFT's length with a minus sign), and a shorter policy's LC
  rate came out about 0.1 too high in simulation (dpolab.simulate, benchmarks/lc_coverage.py);
  the baseline's length as a prompt covariate takes it back into the difficulty.

Written here rather than with scikit-learn because the model needs different penalties for
the difficulty and policy terms and fractional targets; AlpacaEval's own code is tied to its
805 prompts and its annotator cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

from dpolab.aggregate import interval
from dpolab.evaluate import bootstrap_ci


@dataclass
class LCSettings:
    """How the length-controlled model is fitted and its interval computed."""

    l2: float = field(default=1e-3, metadata={"help": "L2 penalty on the policy terms theta and phi"})
    difficulty_l2: float = field(default=1.0, metadata={"help": "L2 penalty on the per-prompt difficulty gamma"})
    resamples: int = field(default=200, metadata={"help": "bootstrap resamples of prompts (each refits the model)"})
    confidence: float = field(default=0.95, metadata={"help": "confidence level of the interval"})
    seed: int = field(default=0, metadata={"help": "seed of the bootstrap"})

    def __post_init__(self):
        if self.l2 < 0 or self.difficulty_l2 <= 0:
            raise ValueError("evaluation.lc: l2 must be >= 0 and difficulty_l2 > 0")
        if self.resamples < 1 or not 0 < self.confidence < 1:
            raise ValueError("evaluation.lc: resamples must be >= 1 and confidence in (0, 1)")


def win_rate(preferences, *, resamples: int, confidence: float, seed: int) -> tuple[float, float, float]:
    """Mean preference (ties half) with its paired bootstrap CI over prompts."""
    preferences = np.asarray(preferences, dtype=np.float64)
    low, high = bootstrap_ci(preferences, resamples=resamples, confidence=confidence, seed=seed)
    return float(preferences.mean()), low, high


@dataclass
class LCFit:
    policies: list[str]
    prompts: np.ndarray
    theta: np.ndarray
    phi: np.ndarray
    gamma: np.ndarray
    sigma: float
    psi: float = 0.0  # the baseline's length term (a part of each prompt's difficulty)
    baseline: np.ndarray | None = None  # per prompt: tanh of the baseline's standardised length

    def difficulty(self) -> np.ndarray:
        """Each prompt's full difficulty: gamma_x plus the part its baseline's length explains."""
        return self.gamma + (self.psi * self.baseline if self.baseline is not None else 0.0)

    def lc_win_rates(self) -> dict[str, float]:
        """mean over prompts of sigmoid(theta_m + difficulty_x): the length term set to zero."""
        difficulty = self.difficulty()
        return {p: float(special.expit(t + difficulty).mean()) for p, t in zip(self.policies, self.theta)}

    def predicted(self, policy_index: np.ndarray, prompt_index: np.ndarray, length_diff: np.ndarray) -> np.ndarray:
        t = np.tanh(length_diff / self.sigma) if self.sigma > 0 else np.zeros_like(length_diff, dtype=float)
        return special.expit(self.theta[policy_index] + self.phi[policy_index] * t + self.difficulty()[prompt_index])


def _standardised_tanh(values: np.ndarray) -> np.ndarray:
    spread = values.std()
    return np.tanh((values - values.mean()) / spread) if spread > 0 else np.zeros_like(values)


def fit_lc_model(frame: pd.DataFrame, settings: LCSettings, *, start: np.ndarray | None = None) -> LCFit:
    """Fit the model on rows (policy, prompt_id, preference, length_diff[, baseline_length]); see
    the module doc. With the baseline's length per prompt, a term psi * tanh(standardised baseline
    length) joins the difficulty: where hard prompts are those the baseline answers at length, a
    shrunk gamma alone leaves that part of the difficulty to the length term, which is correlated
    with the baseline's length through delta, and biases the LC rate of a shorter (or longer) policy."""
    policies = list(dict.fromkeys(frame["policy"]))
    prompts = np.unique(frame["prompt_id"].to_numpy())
    m = pd.Categorical(frame["policy"], categories=policies).codes
    x = np.searchsorted(prompts, frame["prompt_id"].to_numpy())
    y = frame["preference"].to_numpy(dtype=np.float64)
    delta = frame["length_diff"].to_numpy(dtype=np.float64)
    sigma = float(delta.std())
    t = np.tanh(delta / sigma) if sigma > 0 else np.zeros_like(delta)
    n_m, n_x = len(policies), len(prompts)
    baseline = None
    if "baseline_length" in frame:
        per_prompt = (
            pd.Series(frame["baseline_length"].to_numpy(np.float64)).groupby(x).first().reindex(range(n_x)).to_numpy()
        )
        baseline = _standardised_tanh(per_prompt)
    u = baseline[x] if baseline is not None else np.zeros(len(frame))
    size = 2 * n_m + n_x + 1

    def objective(w):
        theta, phi, gamma, psi = w[:n_m], w[n_m : 2 * n_m], w[2 * n_m : 2 * n_m + n_x], w[-1]
        z = theta[m] + phi[m] * t + gamma[x] + psi * u
        # cross-entropy with fractional targets: log(1 + e^z) - y z, computed stably
        loss = np.sum(np.logaddexp(0.0, z) - y * z)
        loss += 0.5 * settings.l2 * (theta @ theta + phi @ phi + psi * psi) + 0.5 * settings.difficulty_l2 * (
            gamma @ gamma
        )
        residual = special.expit(z) - y
        grad = np.concatenate(
            [
                np.bincount(m, residual, n_m) + settings.l2 * theta,
                np.bincount(m, residual * t, n_m) + settings.l2 * phi,
                np.bincount(x, residual, n_x) + settings.difficulty_l2 * gamma,
                [residual @ u + settings.l2 * psi],
            ]
        )
        return loss, grad

    w0 = np.zeros(size) if start is None or len(start) != size else start
    result = optimize.minimize(objective, w0, jac=True, method="L-BFGS-B", options={"maxiter": 2000})
    if not result.success and result.status != 1:  # status 1: iteration limit, still a usable fit
        raise RuntimeError(f"length-controlled model did not converge: {result.message}")
    w = result.x
    return LCFit(
        policies, prompts, w[:n_m], w[n_m : 2 * n_m], w[2 * n_m : 2 * n_m + n_x], sigma, float(w[-1]), baseline
    )


def lc_win_rates(frame: pd.DataFrame, settings: LCSettings, *, return_draws: bool = False):
    """Per policy: raw win rate, LC win rate with a bootstrap CI over prompts (the model is
    refitted on each resample, sigma included), and the fitted length coefficient phi. With
    `return_draws`, also the bootstrap's draws (policy, draw, lc_win_rate): draw r of every policy
    comes from the same resample of prompts, which the seed aggregation (dpolab.aggregate) pairs on."""
    fit = fit_lc_model(frame, settings)
    point = fit.lc_win_rates()
    prompts = fit.prompts
    rng = np.random.default_rng(settings.seed)
    frame = frame.reset_index(drop=True)
    rows_of = [np.flatnonzero(frame["prompt_id"].to_numpy() == pid) for pid in prompts]  # once, not per resample
    start = np.concatenate([fit.theta, fit.phi, fit.gamma, [fit.psi]])
    draws = {p: [] for p in fit.policies}
    for _ in range(settings.resamples):
        picked = rng.integers(len(prompts), size=len(prompts))
        rows = np.concatenate([rows_of[i] for i in picked])
        # each draw of a prompt becomes its own prompt id, so duplicates get their own difficulty
        new_ids = np.repeat(np.arange(len(picked)), [len(rows_of[i]) for i in picked])
        resample = frame.iloc[rows].assign(prompt_id=new_ids)
        refit = fit_lc_model(resample, settings, start=start)
        for policy, value in refit.lc_win_rates().items():
            draws[policy].append(value)
    rows = []
    for index, policy in enumerate(fit.policies):
        values = np.asarray(draws[policy]) if draws[policy] else np.array([point[policy]])
        # a percentile interval can miss its own point by the optimiser's tolerance: widened to hold it
        low, high = interval(values, point[policy], settings.confidence)
        rows.append(
            {
                "policy": policy,
                "win_rate": float(frame.loc[frame["policy"] == policy, "preference"].mean()),
                "lc_win_rate": point[policy],
                "lc_win_rate_ci_low": low,
                "lc_win_rate_ci_high": high,
                "lc_length_coef": float(fit.phi[index]),
                "lc_sigma": fit.sigma,
            }
        )
    if not return_draws:
        return pd.DataFrame(rows)
    draws_table = pd.DataFrame(
        [
            {"policy": policy, "draw": r, "lc_win_rate": value}
            for policy, values in draws.items()
            for r, value in enumerate(values)
        ],
        columns=["policy", "draw", "lc_win_rate"],
    )
    return pd.DataFrame(rows), draws_table


def spearman(a, b) -> float:
    """Spearman rank correlation; NaN when either side is constant or there are < 3 points."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 3 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)
