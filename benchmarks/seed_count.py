"""How many seeds a study needs: the variance components (seeds, prompts, residual) of every paired
difference between two variants at the same beta and temperature in a finished multi-seed study,
and the interval half-width they predict for 1 to 8 seeds on the same prompts.

    python benchmarks/seed_count.py results/default [--metric reward]

The prompt term does not shrink with seeds: past the point where the seed terms are small against
it, another seed buys little. Prints, per metric, the median components over the pairs, the
predicted half-width by seed count (median over pairs) next to the floor (infinitely many seeds),
and the median absolute difference the study measured, to set the width against. The baseline is
the study's own seed count.
"""

import argparse
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from dpolab.aggregate import seed_prompt_table, variance_components
from dpolab.study import parse_policy

COLUMNS = {"reward": "reward", "kl": "kl", "length": "completion_tokens"}


def per_prompt(study: Path, judge: str | None) -> pd.DataFrame:
    """compare/outcomes.parquet (reward, KL, length a prompt) with each policy's grid point, and
    the judge's preference against SFT (win) where one is named."""
    outcomes = pd.read_parquet(study / "compare" / "outcomes.parquet")
    if judge:
        judgments = pd.read_parquet(study / "compare" / "judgments.parquet")
        wins = judgments[(judgments["judge"] == judge) & (judgments["opponent"] == "sft")]
        outcomes = outcomes.merge(
            wins[["policy", "temperature", "prompt_id", "preference"]].rename(columns={"preference": "win"}),
            on=["policy", "temperature", "prompt_id"],
            how="left",
        )
    trained = outcomes[outcomes["policy"] != "sft"].copy()
    parts = pd.DataFrame([parse_policy(p) for p in trained["policy"]], index=trained.index)
    return trained.assign(variant=parts["variant"], beta=parts["beta"].astype(float), seed=parts["seed"].astype(int))


def components(rows: pd.DataFrame, column: str) -> list[dict]:
    seeds, prompts = sorted(rows["seed"].unique()), np.sort(rows["prompt_id"].unique())
    found = []
    for (beta, temperature), cell in rows.groupby(["beta", "temperature"]):
        variants = sorted(cell["variant"].unique())
        for a, b in combinations(variants, 2):
            table_a = seed_prompt_table(cell[cell["variant"] == a], column, seeds, prompts)
            table_b = seed_prompt_table(cell[cell["variant"] == b], column, seeds, prompts)
            difference = table_a - table_b
            if not np.isfinite(difference).all():
                continue
            found.append(
                {
                    "pair": f"{a}-{b}",
                    "beta": beta,
                    "temperature": temperature,
                    "difference": float(difference.mean()),
                    "components": variance_components(difference),
                }
            )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path)
    parser.add_argument("--judge", default="gold", help="judge whose win rate against SFT is analysed too")
    parser.add_argument("--max-seeds", type=int, default=8)
    args = parser.parse_args()
    rows = per_prompt(args.study, args.judge)
    metrics = {**COLUMNS, **({"win_rate": "win"} if "win" in rows else {})}
    print(f"{args.study}: {rows['seed'].nunique()} seeds, {rows['prompt_id'].nunique()} prompts")
    for name, column in metrics.items():
        found = components(rows, column)
        if not found:
            continue
        parts = pd.DataFrame(
            [
                {"seed": c["components"].seed, "prompt": c["components"].prompt, "residual": c["components"].residual}
                for c in found
            ]
        )
        widths = {s: np.median([c["components"].half_width(s) for c in found]) for s in range(1, args.max_seeds + 1)}
        floor = np.median([c["components"].half_width(10**9) for c in found])
        print(
            f"\n{name}: {len(found)} paired differences (same beta and temperature); median variance components "
            f"seed {parts['seed'].median():.3g}, prompt {parts['prompt'].median():.3g}, "
            f"residual {parts['residual'].median():.3g}; "
            f"median |difference| {np.median([abs(c['difference']) for c in found]):.3g}"
        )
        print(
            "  seeds: "
            + "  ".join(f"{s}: ±{w:.3f}" for s, w in widths.items())
            + f"   floor (prompts only): ±{floor:.3f}"
        )


if __name__ == "__main__":
    main()
