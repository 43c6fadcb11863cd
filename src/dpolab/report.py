"""The study's per-seed summary table and its HTML page (plots: dpolab.plots; seed aggregation:
dpolab.aggregate)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from dpolab.compare import ratio_vs_sft

SUMMARY_COLUMNS = [
    "policy",
    "variant",
    "loss",
    "beta",
    "seed",
    "skipped_sft",
    "temperature",
    "judge",
    "n",
    "reward_mean",
    "reward_ci_low",
    "reward_ci_high",
    "vader_mean",
    "kl_mean",
    "win_rate",
    "win_rate_ci_low",
    "win_rate_ci_high",
    "lc_win_rate",
    "lc_win_rate_ci_low",
    "lc_win_rate_ci_high",
    "win_rate_vs_chosen",
    "win_rate_vs_chosen_ci_low",
    "win_rate_vs_chosen_ci_high",
    "length_mean",
    "length_median",
    "chars_mean",
    "length_ratio_vs_sft",
    "chars_ratio_vs_sft",
    "lc_length_coef",
    "score_length_spearman",
    "preference_length_spearman",
    "first_slot_share",
    "tie_share",
]
METRIC_KEYS = ["policy", "temperature"]


def summary_table(
    metric_files: list[Path], win_rates: pd.DataFrame, skipped_sft: dict[str, bool] | None = None
) -> pd.DataFrame:
    """One row per (policy, temperature, judge): evaluate's per-policy metrics (the same for
    every judge) joined with the study-wide win rates of each judge. Columns a study cannot
    have (no pairwise judge: position bias; no chosen responses: win rate vs chosen) are
    empty rather than absent, so every summary.csv has the same columns. `skipped_sft`
    (policy -> whether its training started from the base model, from the config's grid)
    marks the policies that never went through SFT (e.g. ORPO)."""
    # a policy's training step (checkpoints.csv's axis) is not a column of the final policies' table
    metrics = pd.DataFrame([json.loads(Path(f).read_text()) for f in metric_files]).drop(
        columns="step", errors="ignore"
    )
    if skipped_sft is not None:
        unknown = sorted(set(metrics["policy"]) - set(skipped_sft))
        if unknown:
            raise ValueError(f"skipped_sft: no entry for policies {unknown}")
        metrics["skipped_sft"] = metrics["policy"].map(skipped_sft).astype(bool)
    missing = [
        c
        for c in ("policy", "variant", "temperature", "reward_mean", "kl_mean", "length_mean", "chars_mean")
        if c not in metrics
    ]
    if missing:
        raise ValueError(f"metrics files lack columns {missing}")
    metrics["length_ratio_vs_sft"] = ratio_vs_sft(metrics, "length_mean")
    metrics["chars_ratio_vs_sft"] = ratio_vs_sft(metrics, "chars_mean")
    table = metrics.merge(win_rates, on=METRIC_KEYS, how="left", validate="one_to_many")
    unmatched = win_rates.merge(metrics[METRIC_KEYS], on=METRIC_KEYS, how="left", indicator=True)
    unmatched = unmatched[unmatched["_merge"] == "left_only"]
    if len(unmatched):  # e.g. a temperature that differs in its last digit: rows would silently drop out
        first = unmatched.iloc[0]
        raise ValueError(
            f"win rates of judge {first['judge']} for policy {first['policy']} at temperature "
            f"{first['temperature']!r} match no evaluated policy and temperature"
        )
    if table["judge"].isna().any():
        lacking = table.loc[table["judge"].isna(), "policy"].unique().tolist()
        raise ValueError(f"no win rates for policies {lacking}")
    for column in SUMMARY_COLUMNS:
        if column not in table:
            table[column] = float("nan")
    table = table[SUMMARY_COLUMNS + [c for c in table.columns if c not in SUMMARY_COLUMNS]]
    table["seed"] = table["seed"].astype("Int64")  # empty for SFT, an integer otherwise
    order = table["variant"].ne("sft")  # SFT first, then the grid
    return (
        table.assign(_o=order)
        .sort_values(["_o", "variant", "beta", "seed", "temperature", "judge"], kind="stable")
        .drop(columns="_o")
        .reset_index(drop=True)
    )


def _html_table(rows: pd.DataFrame) -> str:
    shown = rows.dropna(axis=1, how="all")
    for column in shown.columns[shown.dtypes.astype(str) == "Int64"]:  # nullable ints: blank, not <NA>
        shown[column] = shown[column].astype(object).where(shown[column].notna(), "")
    return shown.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.3f}", border=0)


def summary_html(table: pd.DataFrame, title: str, *, more: dict[str, pd.DataFrame] | None = None) -> str:
    """The summary table as one standalone HTML page for the Snakemake report (which shows
    HTML outputs inline but offers CSV files only as downloads): one section per judge,
    numbers to 3 decimals, empty cells where a column does not apply. `more` adds sections
    (heading -> table) after it, e.g. the comparisons and the per-seed table."""
    style = (
        "body{font-family:sans-serif;font-size:13px;margin:12px} table{border-collapse:collapse}"
        "th,td{border:1px solid #ccc;padding:2px 6px;text-align:right;white-space:nowrap}"
        "th{background:#f2f2f2;position:sticky;top:0} td:first-child,th:first-child{text-align:left}"
    )
    sections = []
    for judge, rows in table.groupby("judge", sort=False):
        sections.append(f"<h2>judge: {html.escape(str(judge))}</h2>\n{_html_table(rows.drop(columns=['judge']))}")
    for heading, rows in (more or {}).items():
        sections.append(f"<h2>{html.escape(heading)}</h2>\n{_html_table(rows)}")
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>\n" + "\n".join(sections) + "</body></html>"
    )


def study_summary(
    metric_files: list[Path],
    win_rates: pd.DataFrame,
    outcomes: pd.DataFrame,
    judgments: pd.DataFrame,
    lc_draws: pd.DataFrame,
    skipped_sft: dict[str, bool],
    settings,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The summary job's three tables: per seed (summary_by_seed.csv), over seeds (summary.csv) and
    variant against variant (comparisons.csv); `settings` an aggregate.AggregateSettings."""
    from dpolab.aggregate import StudyTables, aggregate, comparisons

    by_seed = summary_table(metric_files, win_rates, skipped_sft)
    tables = StudyTables(by_seed, outcomes, judgments, lc_draws)
    summary, draws = aggregate(tables, settings)
    return by_seed, summary, comparisons(tables, summary, draws, settings)
