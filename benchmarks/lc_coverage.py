"""Bias and coverage of the length-controlled win rate (dpolab.winrate) on simulated studies with a
known truth (dpolab.simulate), per scenario, with and without the baseline-length term of the
difficulty (the model before it: the same fit on frames without `baseline_length`).

    python benchmarks/lc_coverage.py --studies 200 --resamples 100

Prints, per scenario and policy, the truth, the mean bias of the point estimate and the share of
studies whose interval contains the truth. Baseline: the model without the term, run side by side
on the same simulated studies.
"""

import argparse
import time

import numpy as np

from dpolab.simulate import SCENARIOS, simulate_judgments, true_lc_win_rates
from dpolab.winrate import LCSettings, lc_win_rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--resamples", type=int, default=100)
    parser.add_argument("--scenarios", nargs="*", default=list(SCENARIOS))
    parser.add_argument("--first", type=int, default=0, help="first simulated study (split a long run over processes)")
    parser.add_argument(
        "--without",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also fit the baseline (the model without the baseline-length term)",
    )
    args = parser.parse_args()
    settings = LCSettings(resamples=args.resamples)
    for name in args.scenarios:
        scenario = SCENARIOS[name]
        truth = true_lc_win_rates(scenario)
        for model in ("with baseline length", "without (before)")[: 2 if args.without else 1]:
            started = time.perf_counter()
            points, covered = [], []
            for study in range(args.first, args.first + args.studies):
                frame = simulate_judgments(scenario, study)
                if model.startswith("without"):
                    frame = frame.drop(columns="baseline_length")
                table = lc_win_rates(frame, LCSettings(resamples=settings.resamples, seed=study)).set_index("policy")
                estimate = table.loc[[f"p{i}" for i in range(len(truth))]]
                points.append(estimate["lc_win_rate"].to_numpy())
                covered.append(
                    ((estimate["lc_win_rate_ci_low"] <= truth) & (truth <= estimate["lc_win_rate_ci_high"])).to_numpy()
                )
            points, covered = np.array(points), np.array(covered)
            print(
                f"{name:38s} {model:22s} truth {np.round(truth, 3)} bias {np.round(points.mean(0) - truth, 3)} "
                f"coverage {np.round(covered.mean(0), 3)} ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
