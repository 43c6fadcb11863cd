"""Conclusions across seeds: the study's results aggregated over seeds, and variant against variant.

Every policy of a grid point (variant, beta) is trained once per seed and sampled on the same
test prompts, so each metric forms a seeds x prompts table: a prompt's reward, KL (the policy's
log-ratio to the reference on its own sample), length, or the judge's preference against SFT.
The aggregated value is the mean over seeds of each seed's mean over prompts.

Its interval is a crossed (two-way) bootstrap: each resample draws the seeds with replacement and,
independently, the prompts with replacement, one draw of prompts shared by every seed and every
policy. Both sources of variation enter: a new seed (training randomness) and a new set of prompts
(the test sample). The prompts are drawn once for all seeds because every seed answers the same
prompts; drawing them anew within each seed (a nested bootstrap) would average a prompt's
difficulty away and, in simulation, covers the truth too rarely (tests/unit/test_aggregate.py measures
both). The crossed bootstrap counts the seed-by-prompt noise twice and so errs slightly wide.

Comparisons reuse the same draws for both variants (seed s of one against seed s of the other, the
same prompts), so a difference's interval is paired. An interval that excludes zero says the
difference is larger than what retraining with other seeds and testing on other prompts would
move it by; it is not a p-value, and a study that makes many comparisons will find some intervals
that exclude zero by chance (at a 95% level, about one in twenty null differences).

At matched KL, each variant's frontier (SFT at KL 0, then its betas ordered by KL) is interpolated
linearly at KL values inside the range both variants reach, in every resample, so the reward
difference at equal KL carries the same interval.

Written here rather than with scipy.stats.bootstrap: that resamples one axis of independent
observations, and these tables have two crossed axes whose draws must be shared across policies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd

SFT = "sft"
IDENTITY = ["variant", "loss", "beta", "temperature"]
# metric name -> the per-prompt column it is the mean of (judge-independent metrics)
PROMPT_METRICS = {"reward": "reward", "kl": "kl", "length": "completion_tokens", "chars": "chars"}
# metrics compared between variants, by the name they have in summary tables
COMPARED = ("win_rate", "lc_win_rate", "reward", "kl", "length")
# the column of a metric's point estimate: the names summary_by_seed.csv has for the same figures
POINT = {
    "reward": "reward_mean",
    "kl": "kl_mean",
    "length": "length_mean",
    "chars": "chars_mean",
    "win_rate": "win_rate",
    "lc_win_rate": "lc_win_rate",
    "win_rate_vs_chosen": "win_rate_vs_chosen",
}
# per-seed figures without a per-prompt table: averaged over seeds as they are
AVERAGED = [
    "vader_mean",
    "length_median",
    "length_ratio_vs_sft",
    "chars_ratio_vs_sft",
    "lc_length_coef",
    "score_length_spearman",
    "preference_length_spearman",
    "first_slot_share",
    "tie_share",
]


@dataclass(frozen=True)
class AggregateSettings:
    """How results are aggregated over seeds and compared (evaluation:)."""

    resamples: int = field(default=2000, metadata={"help": "crossed bootstrap resamples (seeds and prompts)"})
    confidence: float = field(default=0.95, metadata={"help": "level of every interval"})
    seed: int = field(default=0, metadata={"help": "seed of the bootstrap"})
    matched_kl_points: int = field(default=3, metadata={"help": "KL values at which frontiers are compared"})
    variants: tuple[str, ...] = field(
        default=(),
        metadata={"help": "the grid's order of variants: pairs are (earlier, later) in it; others follow by name"},
    )

    def __post_init__(self):
        if self.resamples < 1 or not 0 < self.confidence < 1 or self.matched_kl_points < 1:
            raise ValueError("evaluation: resamples and matched_kl_points must be >= 1 and confidence in (0, 1)")


@dataclass(frozen=True)
class CrossedDraws:
    """Multinomial counts of one crossed bootstrap: seed_counts (resamples x seeds) and
    prompt_counts (resamples x prompts). Draw b weighs seed s by seed_counts[b, s] and prompt p
    by prompt_counts[b, p]."""

    seeds: tuple
    prompts: np.ndarray
    seed_counts: np.ndarray
    prompt_counts: np.ndarray

    @classmethod
    def draw(cls, seeds, prompts, resamples: int, seed: int) -> CrossedDraws:
        rng = np.random.default_rng(seed)
        seeds, prompts = tuple(seeds), np.asarray(prompts)
        seed_counts = rng.multinomial(len(seeds), np.full(len(seeds), 1 / len(seeds)), size=resamples)
        prompt_counts = rng.multinomial(len(prompts), np.full(len(prompts), 1 / len(prompts)), size=resamples)
        return cls(seeds, prompts, seed_counts.astype(np.float64), prompt_counts.astype(np.float64))

    def means(self, table: np.ndarray) -> np.ndarray:
        """Each draw's mean over seeds of the per-seed mean over prompts of a seeds x prompts
        table (NaN: no value; a seed's mean is over its prompts with values). A table with one
        row (SFT, trained once) is resampled over prompts only."""
        values = np.nan_to_num(table)
        present = np.isfinite(table).astype(np.float64)
        seed_counts = self.seed_counts if table.shape[0] == len(self.seeds) else np.ones((len(self.seed_counts), 1))
        if table.shape[0] != seed_counts.shape[1]:
            raise ValueError(f"a table with {table.shape[0]} seeds against draws over {len(self.seeds)}")
        per_seed_sum = self.prompt_counts @ values.T  # resamples x seeds
        per_seed_n = self.prompt_counts @ present.T
        with np.errstate(invalid="ignore", divide="ignore"):
            per_seed = per_seed_sum / per_seed_n
        # a seed whose drawn prompts all lack a value has no mean that draw: the others carry it
        weights = np.where(np.isfinite(per_seed), seed_counts, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.nansum(np.nan_to_num(per_seed) * weights, axis=1) / weights.sum(axis=1)


def point_mean(table: np.ndarray) -> float:
    """The mean over seeds of each seed's mean over its prompts with values."""
    return float(np.nanmean(np.nanmean(table, axis=1)))


def seed_sd(table: np.ndarray) -> float:
    """The spread of the per-seed means (sample standard deviation); NaN with one seed."""
    per_seed = np.nanmean(table, axis=1)
    return float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else float("nan")


def interval(draws: np.ndarray, point: float, confidence: float) -> tuple[float, float]:
    """Percentile interval of the draws, widened to contain the point estimate: a percentile
    interval of a skewed statistic can miss its own point by a hair, which a reader would take
    for an error."""
    draws = draws[np.isfinite(draws)]
    if not len(draws) or not np.isfinite(point):
        return float("nan"), float("nan")
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(draws, [alpha, 1.0 - alpha])
    return float(min(low, point)), float(max(high, point))


def seed_prompt_table(frame: pd.DataFrame, column: str, seeds, prompts) -> np.ndarray:
    """A seeds x prompts array of `column` from rows (seed, prompt_id, column); NaN where a seed
    has no value for a prompt (a repeated row is averaged). SFT's rows (no seed) give one row."""
    one_row = frame["seed"].isna().all()
    table = np.zeros((1 if one_row else len(seeds), len(prompts)))
    counts = np.zeros_like(table)
    seed_index = (
        np.zeros(len(frame), dtype=int) if one_row else np.searchsorted(np.asarray(seeds), frame["seed"].to_numpy())
    )
    prompt_index = np.searchsorted(prompts, frame["prompt_id"].to_numpy())
    np.add.at(table, (seed_index, prompt_index), frame[column].to_numpy(np.float64))
    np.add.at(counts, (seed_index, prompt_index), 1.0)
    with np.errstate(invalid="ignore"):
        return np.where(counts > 0, table / np.maximum(counts, 1), np.nan)


def lc_table(lc_draws: pd.DataFrame, seeds, resamples: int) -> np.ndarray:
    """The LC fit's bootstrap draws of one grid point as a seeds x draws array, repeated to
    `resamples` columns. Each LC draw refitted the model on one resample of prompts shared by
    every policy of the fit, so column r is that prompt resample."""
    draws = np.sort(lc_draws["draw"].unique())
    wide = seed_prompt_table(lc_draws.rename(columns={"draw": "prompt_id"}), "lc_win_rate", seeds, draws)
    return np.resize(wide, (wide.shape[0], resamples)) if wide.shape[1] != resamples else wide


def lc_means(draws: CrossedDraws, table: np.ndarray) -> np.ndarray:
    """The mean over resampled seeds of the LC draws, draw b taking prompt resample b."""
    if table.shape[0] == 1:
        return table[0]
    weights = draws.seed_counts * np.isfinite(table.T)
    return np.nansum(np.nan_to_num(table.T) * weights, axis=1) / weights.sum(axis=1)


@dataclass
class StudyTables:
    """What the aggregation reads, all from the compare and evaluate jobs:

    - by_seed: today's summary rows (summary_by_seed.csv): one per (policy, temperature, judge),
      with variant, loss, beta, seed (empty for SFT), the per-seed point estimates;
    - outcomes: one row per (policy, temperature, prompt_id): reward, kl, completion_tokens, chars;
    - judgments: preferences (policy, temperature, prompt_id, opponent sft|chosen, judge, preference);
    - lc_draws: the LC fits' bootstrap draws (judge, temperature, policy, draw, lc_win_rate).
    """

    by_seed: pd.DataFrame
    outcomes: pd.DataFrame
    judgments: pd.DataFrame
    lc_draws: pd.DataFrame

    def __post_init__(self):
        identity = self.by_seed.drop_duplicates("policy").set_index("policy")[["variant", "beta", "seed"]]
        self.outcomes = self.outcomes.join(identity, on="policy")
        self.judgments = self.judgments.join(identity, on="policy")
        self.lc_draws = self.lc_draws.join(identity, on="policy")
        self.seeds = sorted(self.by_seed["seed"].dropna().astype(int).unique().tolist()) or [0]
        self.built: dict = {}  # _metric_tables' results by grid point, temperature, judge
        # each table's rows by grid point, once: the aggregation looks them up for every cell
        self.groups = {
            name: {
                key: rows
                for key, rows in frame.groupby(
                    [
                        frame["variant"],
                        frame["beta"].fillna(-1.0).round(12),
                        frame["temperature"].astype(float).round(12),
                    ],
                    sort=False,
                )
            }
            for name, frame in (("outcomes", self.outcomes), ("judgments", self.judgments), ("lc_draws", self.lc_draws))
        }

    def rows(self, name: str, variant: str, beta: float | None, temperature: float) -> pd.DataFrame:
        """The rows of table `name` of one grid point (beta None: SFT) at one temperature."""
        key = (variant, -1.0 if beta is None else round(float(beta), 12), round(float(temperature), 12))
        frame = getattr(self, name)
        return self.groups[name].get(key, frame.iloc[:0])


def _cells(by_seed: pd.DataFrame):
    """The aggregated rows' keys: (variant, beta, temperature, judge) with their per-seed rows."""
    keys = ["variant", "beta", "temperature", "judge"]
    return by_seed.assign(beta=by_seed["beta"].fillna(-1.0)).groupby(keys, sort=False, dropna=False)


def _metric_tables(
    tables: StudyTables,
    variant: str,
    beta: float | None,
    temperature: float,
    judge: str,
    prompts: np.ndarray,
    resamples: int,
) -> dict[str, np.ndarray]:
    """Every metric of one grid point as a seeds x prompts table (LC: seeds x draws), built once:
    the summary, the comparisons at each beta and the frontiers all read the same tables."""
    key = (variant, beta, float(temperature), judge, resamples)
    if key not in tables.built:
        tables.built[key] = _build_metric_tables(tables, variant, beta, temperature, judge, prompts, resamples)
    return tables.built[key]


def _build_metric_tables(
    tables: StudyTables,
    variant: str,
    beta: float | None,
    temperature: float,
    judge: str,
    prompts: np.ndarray,
    resamples: int,
) -> dict[str, np.ndarray]:
    outcomes = tables.rows("outcomes", variant, beta, temperature)
    found = {
        name: seed_prompt_table(outcomes, column, tables.seeds, prompts) for name, column in PROMPT_METRICS.items()
    }
    judged = tables.rows("judgments", variant, beta, temperature)
    judged = judged[judged["judge"] == judge]
    for opponent, name in (("sft", "win_rate"), ("chosen", "win_rate_vs_chosen")):
        against = judged[judged["opponent"] == opponent]
        if len(against):
            found[name] = seed_prompt_table(against, "preference", tables.seeds, prompts)
    lc = tables.rows("lc_draws", variant, beta, temperature)
    lc = lc[lc["judge"] == judge]
    if len(lc):
        found["lc_win_rate"] = lc_table(lc, tables.seeds, resamples)
    return found


def _summarise(name: str, table: np.ndarray, draws: CrossedDraws, confidence: float, lc_points=()) -> dict:
    """A metric's point estimate, seed spread and interval. The LC win rate's per-seed points are
    the full-data fits' (lc_points), its draws the fits' own prompt resamples."""
    if name == "lc_win_rate":
        sampled = lc_means(draws, table)
        point = float(np.mean(lc_points))
    else:
        sampled = draws.means(table)
        point = point_mean(table)
    low, high = interval(sampled, point, confidence)
    spread = (
        seed_sd(table)
        if name != "lc_win_rate"
        else (float(np.std(lc_points, ddof=1)) if len(lc_points) > 1 else np.nan)
    )
    return {POINT[name]: point, f"{name}_seed_sd": spread, f"{name}_ci_low": low, f"{name}_ci_high": high}


def aggregate(tables: StudyTables, settings: AggregateSettings) -> tuple[pd.DataFrame, dict]:
    """summary.csv: one row per (variant, beta, temperature, judge) with the number of seeds and
    prompts and, per metric, the mean over seeds, the spread across seeds and the crossed
    bootstrap interval. Returns the table and the draws (temperature -> CrossedDraws) that the
    comparisons reuse."""
    prompts = np.sort(tables.outcomes["prompt_id"].unique())
    draws = {
        float(t): CrossedDraws.draw(tables.seeds, prompts, settings.resamples, settings.seed)
        for t in sorted(tables.by_seed["temperature"].unique())
    }
    rows = []
    for (variant, beta, temperature, judge), per_seed in _cells(tables.by_seed):
        beta = None if beta == -1.0 else float(beta)
        found = _metric_tables(tables, variant, beta, temperature, judge, prompts, settings.resamples)
        row = {
            "variant": variant,
            "loss": per_seed["loss"].iloc[0],
            "beta": beta,
            "temperature": float(temperature),
            "judge": judge,
            "seeds": int(per_seed["seed"].nunique()) if variant != SFT else 0,
            "prompts": int(np.isfinite(found["reward"]).any(axis=0).sum()),
        }
        if "skipped_sft" in per_seed:
            row["skipped_sft"] = per_seed["skipped_sft"].iloc[0]
        for name, table in found.items():
            lc_points = per_seed["lc_win_rate"].dropna().to_numpy() if name == "lc_win_rate" else ()
            row.update(_summarise(name, table, draws[float(temperature)], settings.confidence, lc_points))
        if variant == SFT:  # SFT against itself: 0.5 by definition, no interval to draw
            for name in ("win_rate", "lc_win_rate"):
                row.update({name: 0.5, f"{name}_ci_low": 0.5, f"{name}_ci_high": 0.5, f"{name}_seed_sd": np.nan})
        row.update({column: float(per_seed[column].mean()) for column in AVERAGED if column in per_seed})
        rows.append(row)
    return _order(pd.DataFrame(rows)), draws


def _order(table: pd.DataFrame) -> pd.DataFrame:
    first = ["variant", "loss", "beta", "temperature", "judge", "seeds", "prompts", "skipped_sft"]
    for name in ("reward", "kl", "win_rate", "lc_win_rate", "win_rate_vs_chosen", "length", "chars"):
        first += [POINT[name], f"{name}_seed_sd", f"{name}_ci_low", f"{name}_ci_high"]
    table = table[[c for c in first if c in table] + [c for c in table.columns if c not in first]]
    sft_first = table["variant"].ne(SFT)
    return (
        table.assign(_o=sft_first)
        .sort_values(["_o", "variant", "beta", "temperature", "judge"], kind="stable")
        .drop(columns="_o")
        .reset_index(drop=True)
    )


def _difference_row(
    name: str,
    a: np.ndarray,
    b: np.ndarray,
    draws: CrossedDraws,
    confidence: float,
    points: tuple[float, float] | None = None,
) -> dict:
    if name == "lc_win_rate":
        sampled = lc_means(draws, a) - lc_means(draws, b)
        point_a, point_b = points
    else:
        sampled = draws.means(a) - draws.means(b)
        point_a, point_b = point_mean(a), point_mean(b)
    difference = point_a - point_b
    low, high = interval(sampled, difference, confidence)
    return {
        "metric": name,
        "value_a": point_a,
        "value_b": point_b,
        "difference": difference,
        "ci_low": low,
        "ci_high": high,
        "excludes_zero": bool(low > 0 or high < 0),
    }


def in_grid_order(variants, settings: AggregateSettings) -> list[str]:
    """Variants in the grid's order (settings.variants), any others after them by name: the pairs
    read as the config lists the variants (dpo before ipo before kto, ...)."""
    variants = list(dict.fromkeys(variants))
    return [v for v in settings.variants if v in variants] + sorted(v for v in variants if v not in settings.variants)


def compare_at_beta(
    tables: StudyTables, summary: pd.DataFrame, draws: dict, settings: AggregateSettings
) -> pd.DataFrame:
    """Every pair of variants at each beta, temperature and judge they share: the paired
    difference (a minus b) of each compared metric with its interval."""
    prompts = draws[next(iter(draws))].prompts
    grid = summary[summary["variant"] != SFT]
    rows = []
    for (beta, temperature, judge), cell in grid.groupby(["beta", "temperature", "judge"], sort=False):
        variants = in_grid_order(cell["variant"], settings)
        found = {v: _metric_tables(tables, v, beta, temperature, judge, prompts, settings.resamples) for v in variants}
        points = cell.set_index("variant")["lc_win_rate"] if "lc_win_rate" in cell else None
        for a, b in combinations(variants, 2):
            for name in COMPARED:
                if name not in found[a] or name not in found[b]:
                    continue
                pair = (float(points[a]), float(points[b])) if name == "lc_win_rate" else None
                rows.append(
                    {
                        "comparison": "at_beta",
                        "variant_a": a,
                        "variant_b": b,
                        "beta": float(beta),
                        "kl": np.nan,
                        "temperature": float(temperature),
                        "judge": judge,
                        **_difference_row(
                            name, found[a][name], found[b][name], draws[float(temperature)], settings.confidence, pair
                        ),
                    }
                )
    return pd.DataFrame(rows)


@dataclass
class Frontier:
    """One variant's (KL, reward) points at one temperature: SFT at KL 0, then each beta; as
    point estimates and per bootstrap draw."""

    kl: np.ndarray  # points
    reward: np.ndarray
    kl_draws: np.ndarray  # resamples x points
    reward_draws: np.ndarray

    def at(self, kl_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The reward interpolated at each KL value: the point estimate, and per draw (each draw's
        points ordered by its own KL)."""
        order = np.argsort(self.kl)
        point = np.interp(kl_values, self.kl[order], self.reward[order])
        per_draw = np.empty((len(self.kl_draws), len(kl_values)))
        for b, (kl, reward) in enumerate(zip(self.kl_draws, self.reward_draws)):
            keep = np.isfinite(kl) & np.isfinite(reward)
            order = np.argsort(kl[keep])
            per_draw[b] = np.interp(kl_values, kl[keep][order], reward[keep][order])
        return point, per_draw


def frontier(tables: StudyTables, variant: str, temperature: float, draws: CrossedDraws) -> Frontier:
    prompts = draws.prompts
    sft_kl_reward = _metric_tables(tables, SFT, None, temperature, "", prompts, 1)
    betas = sorted(tables.by_seed.loc[tables.by_seed["variant"] == variant, "beta"].dropna().unique())
    kl, reward, kl_draws, reward_draws = (
        [0.0],
        [point_mean(sft_kl_reward["reward"])],
        [np.zeros(len(draws.seed_counts))],
        [draws.means(sft_kl_reward["reward"])],
    )
    for beta in betas:
        found = _metric_tables(tables, variant, beta, temperature, "", prompts, 1)
        kl.append(point_mean(found["kl"]))
        reward.append(point_mean(found["reward"]))
        kl_draws.append(draws.means(found["kl"]))
        reward_draws.append(draws.means(found["reward"]))
    return Frontier(np.array(kl), np.array(reward), np.stack(kl_draws, axis=1), np.stack(reward_draws, axis=1))


def matched_kl_values(a: Frontier, b: Frontier, points: int) -> np.ndarray:
    """`points` KL values evenly inside (0, the smaller of the two frontiers' largest KL]: the
    range both variants reach (both start at SFT, KL 0)."""
    reach = min(a.kl.max(), b.kl.max())
    if not reach > 0:
        return np.array([])
    return reach * np.arange(1, points + 1) / points


def compare_at_kl(tables: StudyTables, summary: pd.DataFrame, draws: dict, settings: AggregateSettings) -> pd.DataFrame:
    """Every pair of variants at each temperature: the reward of each on its frontier at matched
    KL values, the difference and its paired interval."""
    rows = []
    variants = in_grid_order((v for v in summary["variant"] if v != SFT), settings)
    for temperature in sorted(summary["temperature"].unique()):
        fronts = {v: frontier(tables, v, float(temperature), draws[float(temperature)]) for v in variants}
        for a, b in combinations(variants, 2):
            kl_values = matched_kl_values(fronts[a], fronts[b], settings.matched_kl_points)
            if not len(kl_values):
                continue
            point_a, draws_a = fronts[a].at(kl_values)
            point_b, draws_b = fronts[b].at(kl_values)
            for i, kl in enumerate(kl_values):
                difference = float(point_a[i] - point_b[i])
                low, high = interval(draws_a[:, i] - draws_b[:, i], difference, settings.confidence)
                rows.append(
                    {
                        "comparison": "at_kl",
                        "variant_a": a,
                        "variant_b": b,
                        "beta": np.nan,
                        "kl": float(kl),
                        "temperature": float(temperature),
                        "judge": "",
                        "metric": "reward",
                        "value_a": float(point_a[i]),
                        "value_b": float(point_b[i]),
                        "difference": difference,
                        "ci_low": low,
                        "ci_high": high,
                        "excludes_zero": bool(low > 0 or high < 0),
                    }
                )
    return pd.DataFrame(rows)


def comparisons(tables: StudyTables, summary: pd.DataFrame, draws: dict, settings: AggregateSettings) -> pd.DataFrame:
    """comparisons.csv: at_beta rows (each metric, each judge) then at_kl rows (reward)."""
    frames = [compare_at_beta(tables, summary, draws, settings), compare_at_kl(tables, summary, draws, settings)]
    frames = [f for f in frames if len(f)]
    columns = [
        "comparison",
        "variant_a",
        "variant_b",
        "beta",
        "kl",
        "temperature",
        "judge",
        "metric",
        "value_a",
        "value_b",
        "difference",
        "ci_low",
        "ci_high",
        "excludes_zero",
    ]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


# ---- checkpoints: each (variant, beta)'s path from SFT to its final policy ------------------------
CURVE_KEYS = ["variant", "loss", "beta", "step", "temperature"]
CURVE_METRICS = ["kl_mean", "reward_mean", "length_mean"]


def checkpoint_curves(
    metrics: pd.DataFrame, final_steps: dict[str, int] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per seed and over seeds, each policy's (KL, reward) at its training steps
    (evaluation.checkpoints and the final step), SFT as step 0 of every curve: `metrics` holds
    evaluate's metrics.json rows (columns policy, variant, loss, beta, seed, step, temperature,
    kl_mean, reward_mean, ...). Over seeds: the mean and the spread (sd) across seeds at each step;
    the per-seed rows keep each evaluation's interval over prompts. A row without its step (evaluated
    before steps were recorded) is SFT's step 0 or its variant's last step (`final_steps`)."""
    metrics = metrics.copy()
    if "step" not in metrics:
        metrics["step"] = np.nan
    unknown = metrics["step"].isna()
    metrics.loc[unknown & metrics["variant"].eq(SFT), "step"] = 0
    for variant, step in (final_steps or {}).items():
        metrics.loc[unknown & metrics["variant"].eq(variant) & ~metrics["policy"].str.contains("/step~"), "step"] = step
    missing = [c for c in ["policy", "seed", *CURVE_KEYS, *CURVE_METRICS] if c not in metrics]
    if missing or metrics["step"].isna().any():
        what = (
            f"columns {missing}" if missing else f"the step of {metrics.loc[metrics['step'].isna(), 'policy'].iloc[0]}"
        )
        raise ValueError(f"metrics lack {what} (metrics.json written by an older dpolab: rerun evaluate)")
    by_seed = metrics[
        [
            "policy",
            "seed",
            *CURVE_KEYS,
            *CURVE_METRICS,
            *[c for c in ("reward_ci_low", "reward_ci_high") if c in metrics],
        ]
    ].copy()
    by_seed["seed"] = by_seed["seed"].astype("Int64")
    by_seed["step"] = by_seed["step"].astype(int)
    order = by_seed["variant"].ne(SFT)
    by_seed = (
        by_seed.assign(_o=order)
        .sort_values(["_o", "variant", "beta", "seed", "temperature", "step"], kind="stable")
        .drop(columns="_o")
        .reset_index(drop=True)
    )
    keyed = by_seed.assign(loss=by_seed["loss"].fillna(""), beta=by_seed["beta"].fillna(0.0))
    grouped = keyed.groupby(CURVE_KEYS, sort=False)
    curves = grouped[CURVE_METRICS].mean()
    spread = grouped[["kl_mean", "reward_mean"]].std(ddof=1).rename(columns=lambda c: c.replace("_mean", "_seed_sd"))
    curves = curves.join(spread).join(grouped.size().rename("seeds")).reset_index()
    curves.loc[curves["variant"] == SFT, "beta"] = np.nan
    columns = [*CURVE_KEYS, "seeds", "kl_mean", "kl_seed_sd", "reward_mean", "reward_seed_sd", "length_mean"]
    return by_seed, curves[columns]


# ---- how many seeds: variance components of a paired difference ----------------------------------
@dataclass(frozen=True)
class VarianceComponents:
    """A seeds x prompts table (e.g. variant a's reward minus variant b's, prompt by prompt) as a
    two-way random-effects model, value = mean + seed effect + prompt effect + residual, from the
    ANOVA mean squares (method of moments, negative estimates set to 0)."""

    seed: float  # variance of the seed effects (training randomness)
    prompt: float  # variance of the prompt effects (which prompts were drawn)
    residual: float  # seed-by-prompt interaction and sampling noise
    seeds: int
    prompts: int

    def half_width(self, seeds: int, prompts: int | None = None, confidence: float = 0.95) -> float:
        """The normal-approximation half-width of the interval of the mean with `seeds` seeds on
        `prompts` prompts (default: the study's): seeds shrink the seed and residual terms only."""
        from scipy.stats import norm

        prompts = prompts or self.prompts
        variance = self.seed / seeds + self.prompt / prompts + self.residual / (seeds * prompts)
        return float(norm.ppf(0.5 + confidence / 2) * np.sqrt(variance))


def variance_components(table: np.ndarray) -> VarianceComponents:
    """VarianceComponents of a complete seeds x prompts table (at least 2 x 2, no NaN)."""
    table = np.asarray(table, dtype=np.float64)
    seeds, prompts = table.shape
    if seeds < 2 or prompts < 2 or not np.isfinite(table).all():
        raise ValueError(f"a complete table of at least 2 seeds x 2 prompts is needed, got {seeds} x {prompts}")
    grand = table.mean()
    seed_means, prompt_means = table.mean(axis=1), table.mean(axis=0)
    ms_seed = prompts * np.sum((seed_means - grand) ** 2) / (seeds - 1)
    ms_prompt = seeds * np.sum((prompt_means - grand) ** 2) / (prompts - 1)
    residual = table - seed_means[:, None] - prompt_means[None, :] + grand
    ms_residual = np.sum(residual**2) / ((seeds - 1) * (prompts - 1))
    return VarianceComponents(
        seed=max((ms_seed - ms_residual) / prompts, 0.0),
        prompt=max((ms_prompt - ms_residual) / seeds, 0.0),
        residual=float(ms_residual),
        seeds=seeds,
        prompts=prompts,
    )
