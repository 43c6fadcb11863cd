"""Fixed example data more than one test module reads: preference pairs for the trainers, a judged
study for compare, evaluate metrics rows with checkpoints, and a simulated study for the summary."""

import copy

import numpy as np
import pandas as pd
import yaml

from dpolab.aggregate import StudyTables
from dpolab.config import ROOT

SEEDS, PROMPTS = 3, 64
COMPARE_PROMPTS = 40  # prompts of scored_samples


PAIRS = pd.DataFrame(
    {
        "pair_id": range(6),
        "prompt": ["This movie was", "I saw it", "The plot", "Acting is", "What a", "Never again"],
        "chosen": [
            " great fun",
            " and loved it",
            " is brilliant",
            " superb here",
            " wonderful film",
            " was I so happy",
        ],
        "rejected": [" awful", " and hated every minute", " is dull", " bad", " mess", " will I watch this"],
    }
)


def scored_samples(rng):
    rows = []
    for policy, score_shift, extra_tokens in (
        ("sft", 0.0, 0),
        ("variant~a/beta~0.1/seed~0", 0.3, 8),
        ("variant~b/beta~0.1/seed~0", 0.0, 0),
    ):
        for temperature in (0.0, 1.0):
            tokens = rng.integers(5, 20, size=COMPARE_PROMPTS) + extra_tokens
            rows.append(
                pd.DataFrame(
                    {
                        "policy": policy,
                        "temperature": temperature,
                        "prompt_id": np.arange(COMPARE_PROMPTS),
                        "completion_tokens": tokens,
                        "chars": tokens * 5,
                        "score_gold": rng.random(COMPARE_PROMPTS) + score_shift,
                    }
                )
            )
    return pd.concat(rows, ignore_index=True)


def metrics_rows():
    """Evaluate's metrics.json rows of a two-seed study with checkpoints at steps 1 and 2 of 4."""
    rows = []
    for temperature in (0.0, 1.0):
        rows.append(
            {
                "policy": "sft",
                "variant": "sft",
                "loss": "",
                "beta": None,
                "seed": None,
                "step": 0,
                "temperature": temperature,
                "kl_mean": 0.0,
                "reward_mean": 0.4,
                "length_mean": 10.0,
            }
        )
        for variant, slope in (("dpo", 0.05), ("kto", 0.02)):
            for seed in (0, 1):
                for step in (1, 2, 4):
                    rows.append(
                        {
                            "policy": f"variant~{variant}/beta~0.1/seed~{seed}" + (f"/step~{step}" if step < 4 else ""),
                            "variant": variant,
                            "loss": variant,
                            "beta": 0.1,
                            "seed": seed,
                            "step": step,
                            "temperature": temperature,
                            "kl_mean": step * (1 + seed),
                            "reward_mean": 0.4 + slope * step + 0.01 * seed,
                            "length_mean": 10.0 + step,
                            "reward_ci_low": 0.3,
                            "reward_ci_high": 0.6,
                        }
                    )
    return pd.DataFrame(rows)


def logistic(z):
    return 1.0 / (1.0 + np.exp(-z))


def simulate_preferences(rng, strength: float, prompt_effect, seeds=SEEDS, seed_sd=0.2):
    """A seeds x prompts table of 0/1 wins against SFT: logit = strength + the seed's effect (training
    randomness) + the prompt's (shared by every seed and policy)."""
    seed_effect = rng.normal(0, seed_sd, seeds)
    return (
        rng.random((seeds, len(prompt_effect))) < logistic(strength + seed_effect[:, None] + prompt_effect[None, :])
    ).astype(float)


def simulated_study(rng, *, strengths: dict, betas=(0.1, 0.5), seeds=SEEDS, prompts=PROMPTS, temperatures=(1.0,)):
    """The tables the summary job reads, for variants whose win probability against SFT has logit
    strengths[variant] at every beta; KL grows as beta falls and the reward follows the win logit."""
    prompt_effect = rng.normal(0, 1.0, prompts)
    by_seed, outcomes, judgments, lc_draws = [], [], [], []

    def add(policy, variant, beta, seed, temperature, wins, reward, kl):
        tokens = rng.integers(5, 15, prompts)
        outcomes.append(
            pd.DataFrame(
                {
                    "policy": policy,
                    "temperature": temperature,
                    "prompt_id": np.arange(prompts),
                    "reward": reward,
                    "kl": kl,
                    "completion_tokens": tokens,
                    "chars": tokens * 4,
                }
            )
        )
        if wins is not None:
            judgments.append(
                pd.DataFrame(
                    {
                        "policy": policy,
                        "temperature": temperature,
                        "prompt_id": np.arange(prompts),
                        "opponent": "sft",
                        "preference": wins,
                        "judge": "gold",
                    }
                )
            )
            lc_draws.append(
                pd.DataFrame(
                    {
                        "judge": "gold",
                        "temperature": temperature,
                        "policy": policy,
                        "draw": np.arange(50),
                        "lc_win_rate": wins.mean() + rng.normal(0, 0.03, 50),
                    }
                )
            )
        by_seed.append(
            {
                "policy": policy,
                "variant": variant,
                "loss": variant,
                "beta": beta,
                "seed": seed,
                "temperature": temperature,
                "judge": "gold",
                "reward_mean": reward.mean(),
                "kl_mean": kl.mean(),
                "win_rate": 0.5 if wins is None else wins.mean(),
                "lc_win_rate": 0.5 if wins is None else wins.mean(),
                "length_mean": 10.0,
                "vader_mean": 0.1,
            }
        )

    for temperature in temperatures:
        add("sft", "sft", np.nan, np.nan, temperature, None, logistic(prompt_effect), np.zeros(prompts))
        for variant, strength in strengths.items():
            for beta in betas:
                table = simulate_preferences(rng, strength, prompt_effect, seeds)
                for seed in range(seeds):
                    kl = rng.exponential(1.0 / beta, prompts) * 0.1
                    reward = logistic(strength * (1 + np.log(0.5 / beta)) + prompt_effect + rng.normal(0, 0.1, prompts))
                    add(
                        f"variant~{variant}/beta~{beta}/seed~{seed}",
                        variant,
                        beta,
                        seed,
                        temperature,
                        table[seed],
                        reward,
                        kl,
                    )
    return StudyTables(pd.DataFrame(by_seed), pd.concat(outcomes), pd.concat(judgments), pd.concat(lc_draws))


def perturbed_copy(model_dir, out):
    """The model with noise on every weight, saved to `out` (another checkpoint of the same
    architecture, as a policy is of the SFT model); returns the perturbed model."""
    import torch

    from dpolab.models import load_policy

    other, tokenizer = load_policy(model_dir)
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    other.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return other


SMOKE = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())


def smoke_with(**evaluation) -> dict:
    """A copy of configs/smoke.yaml with `evaluation` keys changed."""
    config = copy.deepcopy(SMOKE)
    config.setdefault("evaluation", {}).update(evaluation)
    return config


# a prompt, a positive and a negative continuation of it, four times (the judges' tests)
JUDGE_PROMPTS = ["This movie was", "I watched it and", "The acting", "What a"]
GOOD = [" wonderful and moving.", " loved every minute of it.", " is superb.", " great film!"]
BAD = [" dull.", " hated it, a terrible waste of time.", " is awful.", " mess."]
