"""Simulated judgments with a known truth, to check the length-controlled win rate (dpolab.winrate)
where real data cannot: each simulated study draws prompts, an SFT baseline's response lengths, a
few policies' lengths and strengths, and a judge that prefers by strength, by length and by the
prompt's difficulty. The truth is each policy's win rate at no length difference, averaged over
the population of prompts.

Scenarios (`Scenario.name`):
- independent: difficulty unrelated to length;
- difficulty_follows_baseline_length: prompts where SFT answers at length are the hard ones (a
  long-answer question is harder to beat), the case in which a shrunk per-prompt difficulty
  loads onto the length term;
- strong_length_preference: a judge that strongly prefers longer answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import special


@dataclass(frozen=True)
class Scenario:
    name: str
    prompts: int = 100
    strengths: tuple[float, ...] = (0.0, 0.4, 0.2, -0.2)  # theta per policy
    length_ratios: tuple[float, ...] = (0.7, 1.0, 1.4, 1.0)  # policy length / SFT length
    length_effects: tuple[float, ...] = (0.5, 0.5, 0.5, 0.5)  # phi per policy
    difficulty_sd: float = 1.0
    difficulty_length_coupling: float = 0.0  # gamma_x = -coupling * z(SFT length) + the rest
    length_scale: float = 40.0  # sigma of tanh(delta / sigma) in the judge
    extra: dict = field(default_factory=dict)


SCENARIOS = {
    "independent": Scenario("independent"),
    "difficulty_follows_baseline_length": Scenario(
        "difficulty_follows_baseline_length", difficulty_length_coupling=0.8
    ),
    "strong_length_preference": Scenario("strong_length_preference", length_effects=(1.5, 1.5, 1.5, 1.5)),
}


def _prompts(rng, scenario: Scenario, n: int):
    baseline = rng.lognormal(np.log(60), 0.5, n)
    z = (np.log(baseline) - np.log(60)) / 0.5
    coupling = scenario.difficulty_length_coupling
    rest = rng.normal(0, scenario.difficulty_sd * np.sqrt(max(1 - coupling**2, 0.0)), n)
    difficulty = -coupling * scenario.difficulty_sd * z + rest
    return baseline, difficulty


def true_lc_win_rates(scenario: Scenario, draws: int = 400_000, seed: int = 12345) -> np.ndarray:
    """Per policy: the mean over the prompt population of sigmoid(theta_m + gamma_x)."""
    _, difficulty = _prompts(np.random.default_rng(seed), scenario, draws)
    return np.array([special.expit(theta + difficulty).mean() for theta in scenario.strengths])


def simulate_judgments(scenario: Scenario, seed: int) -> pd.DataFrame:
    """One study's judgments against SFT: rows (policy, prompt_id, preference, length_diff,
    baseline_length), preferences 0/1 drawn from the judge's model."""
    rng = np.random.default_rng(seed)
    baseline, difficulty = _prompts(rng, scenario, scenario.prompts)
    frames = []
    for index, (theta, ratio, phi) in enumerate(
        zip(scenario.strengths, scenario.length_ratios, scenario.length_effects)
    ):
        length = np.maximum(1.0, np.round(baseline * ratio * rng.lognormal(0, 0.2, scenario.prompts)))
        delta = length - np.round(baseline)
        p = special.expit(theta + phi * np.tanh(delta / scenario.length_scale) + difficulty)
        frames.append(
            pd.DataFrame(
                {
                    "policy": f"p{index}",
                    "prompt_id": np.arange(scenario.prompts),
                    "preference": (rng.random(scenario.prompts) < p).astype(float),
                    "length_diff": delta,
                    "baseline_length": np.round(baseline),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)
