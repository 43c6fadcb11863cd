"""The study's summary table and plots."""

from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from dpolab.compare import ratio_vs_sft  # noqa: E402
from dpolab.winrate import spearman  # noqa: E402

SUMMARY_COLUMNS = [
    "policy", "variant", "loss", "beta", "seed", "skipped_sft", "temperature", "judge", "n",
    "reward_mean", "reward_ci_low", "reward_ci_high", "vader_mean", "kl_mean",
    "win_rate", "win_rate_ci_low", "win_rate_ci_high",
    "lc_win_rate", "lc_win_rate_ci_low", "lc_win_rate_ci_high",
    "win_rate_vs_chosen", "win_rate_vs_chosen_ci_low", "win_rate_vs_chosen_ci_high",
    "length_mean", "length_median", "chars_mean", "length_ratio_vs_sft", "chars_ratio_vs_sft",
    "lc_length_coef", "score_length_spearman", "preference_length_spearman", "first_slot_share", "tie_share",
]
METRIC_KEYS = ["policy", "temperature"]


def summary_table(metric_files: list[Path], win_rates: pd.DataFrame, skipped_sft: dict[str, bool] | None = None) -> pd.DataFrame:
    """One row per (policy, temperature, judge): evaluate's per-policy metrics (the same for
    every judge) joined with the study-wide win rates of each judge. Columns a study cannot
    have (no pairwise judge: position bias; no chosen responses: win rate vs chosen) are
    empty rather than absent, so every summary.csv has the same columns. `skipped_sft`
    (policy -> whether its training started from the base model, from the config's grid)
    marks the policies that never went through SFT (e.g. ORPO)."""
    metrics = pd.DataFrame([json.loads(Path(f).read_text()) for f in metric_files])
    if skipped_sft is not None:
        unknown = sorted(set(metrics["policy"]) - set(skipped_sft))
        if unknown:
            raise ValueError(f"skipped_sft: no entry for policies {unknown}")
        metrics["skipped_sft"] = metrics["policy"].map(skipped_sft).astype(bool)
    missing = [c for c in ("policy", "variant", "temperature", "reward_mean", "kl_mean", "length_mean", "chars_mean") if c not in metrics]
    if missing:
        raise ValueError(f"metrics files lack columns {missing}")
    metrics["length_ratio_vs_sft"] = ratio_vs_sft(metrics, "length_mean")
    metrics["chars_ratio_vs_sft"] = ratio_vs_sft(metrics, "chars_mean")
    table = metrics.merge(win_rates, on=METRIC_KEYS, how="left", validate="one_to_many")
    unmatched = win_rates.merge(metrics[METRIC_KEYS], on=METRIC_KEYS, how="left", indicator=True)
    unmatched = unmatched[unmatched["_merge"] == "left_only"]
    if len(unmatched):  # e.g. a temperature that differs in its last digit: rows would silently drop out
        first = unmatched.iloc[0]
        raise ValueError(f"win rates of judge {first['judge']} for policy {first['policy']} at temperature "
                         f"{first['temperature']!r} match no evaluated policy and temperature")
    if table["judge"].isna().any():
        lacking = table.loc[table["judge"].isna(), "policy"].unique().tolist()
        raise ValueError(f"no win rates for policies {lacking}")
    for column in SUMMARY_COLUMNS:
        if column not in table:
            table[column] = float("nan")
    table = table[SUMMARY_COLUMNS + [c for c in table.columns if c not in SUMMARY_COLUMNS]]
    table["seed"] = table["seed"].astype("Int64")  # empty for SFT, an integer otherwise
    order = table["variant"].ne("sft")  # SFT first, then the grid
    return (table.assign(_o=order).sort_values(["_o", "variant", "beta", "seed", "temperature", "judge"], kind="stable")
            .drop(columns="_o").reset_index(drop=True))


def _save(fig, path: Path) -> list[str]:
    """Save the figure; returns what it shows: every legend entry and y tick label, so the
    plots' contents can be checked and indexed without reading the PNG (plots/series.json)."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    shown = []
    for ax in fig.axes:
        shown += ax.get_legend_handles_labels()[1] + [t.get_text() for t in ax.get_yticklabels() if t.get_text() and not _is_number(t.get_text())]
    plt.close(fig)
    return list(dict.fromkeys(shown))


def _is_number(text: str) -> bool:
    try:
        float(text.replace("−", "-"))  # matplotlib's tick labels use a true minus sign
        return True
    except ValueError:
        return False


def _err(mid, low, high):
    """Error bar lengths; clipped at 0 because a percentile bootstrap interval need not
    contain the point estimate exactly (the LC point is the full-data fit)."""
    return [np.clip(mid - low, 0, None), np.clip(high - mid, 0, None)]


def one_judge(table: pd.DataFrame, judge: str) -> pd.DataFrame:
    """The rows of one judge: one row per (policy, temperature), as the per-policy metrics."""
    return table[table["judge"] == judge]


def policy_label(row) -> str:
    return "SFT" if row["variant"] == "sft" else f"{row['variant']} β={row['beta']:g}"


def _by_variant(table: pd.DataFrame):
    grid = table[table["variant"] != "sft"]
    return grid.groupby("variant", sort=False)


def plot_frontier(table: pd.DataFrame, path: Path, reward_label: str = "gold reward (P(positive))") -> list[str]:
    """Reward against KL to the reference: the DPO paper's Fig. 2 frontier."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for variant, rows in _by_variant(table):
        for temperature, at_t in rows.groupby("temperature"):
            at_t = at_t.sort_values("kl_mean")
            ax.plot(at_t["kl_mean"], at_t["reward_mean"], "o-", label=f"{variant} (T={temperature:g})")
            for _, r in at_t.iterrows():
                ax.annotate(f"β={r['beta']:g}", (r["kl_mean"], r["reward_mean"]), fontsize=7, alpha=0.7)
    sft = table[table["variant"] == "sft"]
    ax.scatter(sft["kl_mean"], sft["reward_mean"], marker="*", s=150, color="black", label="SFT", zorder=3)
    ax.set_xlabel("KL(policy || reference), nats per sample")
    ax.set_ylabel(reward_label)
    ax.set_title("Reward vs KL frontier")
    ax.legend(fontsize=7)
    return _save(fig, path)


def _plot_vs_beta(table: pd.DataFrame, path: Path, column: str, ylabel: str, title: str, baseline: float | None, ci=None) -> list[str]:
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for variant, rows in _by_variant(table):
        for temperature, at_t in rows.groupby("temperature"):
            means = at_t.groupby("beta")[[column] + (list(ci) if ci else [])].mean().sort_index()
            label = f"{variant} (T={temperature:g})"
            if ci:
                err = _err(means[column], means[ci[0]], means[ci[1]])
                ax.errorbar(means.index, means[column], yerr=err, fmt="o-", capsize=3, label=label)
            else:
                ax.plot(means.index, means[column], "o-", label=label)
    if baseline is not None:
        ax.axhline(baseline, color="black", ls="--", lw=1, label="SFT")
    ax.set_xscale("log")
    ax.set_xlabel("beta")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_raw_vs_lc(table: pd.DataFrame, path: Path, judge: str) -> list[str]:
    """Raw and length-controlled win rate against SFT per policy, one panel per temperature."""
    grid = table[table["variant"] != "sft"]
    temperatures = sorted(grid["temperature"].unique())
    fig, axes = plt.subplots(1, len(temperatures), figsize=(4.5 * len(temperatures), 0.45 * grid["policy"].nunique() + 1.8),
                             sharey=True, squeeze=False)
    for ax, temperature in zip(axes[0], temperatures):
        rows = grid[grid["temperature"] == temperature].reset_index(drop=True)
        y = range(len(rows))
        for offset, (column, label, color) in enumerate((("win_rate", "raw", "tab:blue"), ("lc_win_rate", "length-controlled", "tab:orange"))):
            err = _err(rows[column], rows[f"{column}_ci_low"], rows[f"{column}_ci_high"])
            ax.errorbar(rows[column], [v + 0.15 * (offset * 2 - 1) for v in y], xerr=err, fmt="o", capsize=3, color=color, label=label)
        ax.axvline(0.5, color="black", ls="--", lw=1)
        ax.set_yticks(list(y), [policy_label(r) for _, r in rows.iterrows()], fontsize=8)
        ax.set_xlabel(f"win rate vs SFT ({judge})")
        ax.set_title(f"T={temperature:g}")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Raw vs length-controlled win rate")
    return _save(fig, path)


def plot_win_rate_vs_temperature(table: pd.DataFrame, path: Path, judge: str) -> list[str]:
    fig, ax = plt.subplots(figsize=(6, 4.5))
    colors = {v: f"C{i}" for i, v in enumerate(table.loc[table["variant"] != "sft", "variant"].unique())}
    styles = ["-", "--", ":", "-."]
    for (variant, beta), rows in table[table["variant"] != "sft"].groupby(["variant", "beta"], sort=False):
        means = rows.groupby("temperature")[["win_rate", "win_rate_ci_low", "win_rate_ci_high"]].mean().sort_index()
        betas = sorted(table.loc[table["variant"] == variant, "beta"].unique())
        err = _err(means["win_rate"], means["win_rate_ci_low"], means["win_rate_ci_high"])
        ax.errorbar(means.index, means["win_rate"], yerr=err, fmt="o", ls=styles[betas.index(beta) % len(styles)],
                    color=colors[variant], capsize=3, label=f"{variant} β={beta:g}")
    ax.axhline(0.5, color="black", ls="--", lw=1, label="SFT")
    ax.set_xlabel("sampling temperature")
    ax.set_ylabel(f"win rate vs SFT ({judge})")
    ax.set_title("Win rate vs temperature")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_score_vs_length(scores: pd.DataFrame, variants: dict, path: Path, judge: str) -> list[str]:
    """Every generation's score under `judge` against its length, coloured by variant."""
    rows = scores[scores["judge"] == judge].assign(variant=lambda f: f["policy"].map(variants))
    fig, ax = plt.subplots(figsize=(6, 4.5))
    jitter = np.random.default_rng(0).uniform(-0.3, 0.3, size=len(rows))
    for i, (variant, part) in enumerate(rows.groupby("variant", sort=False)):
        ax.scatter(part["completion_tokens"] + jitter[: len(part)], part["score"], s=6, alpha=0.4, color=f"C{i}", label=variant)
    rho = spearman(rows["score"], rows["completion_tokens"])
    ax.set_xlabel("response length (tokens)")
    ax.set_ylabel(f"{judge} score")
    ax.set_title(f"Score vs length (Spearman ρ = {rho:.2f}, all generations)")
    ax.legend(fontsize=7, markerscale=2)
    return _save(fig, path)


PLOTS = ("reward_vs_kl", "win_rate_vs_beta", "length_vs_beta", "raw_vs_lc_win_rate", "win_rate_vs_temperature", "score_vs_length")


def write_plots(table: pd.DataFrame, scores: pd.DataFrame, out_dir: Path, *, primary_judge: str, score_judge: str,
                reward_label: str = "gold reward (P(positive))") -> list[Path]:
    """The study's plots; win rates are the primary judge's, the scatter uses `score_judge`
    (a pointwise judge; every study has one). Also plots/series.json: each plot's legend
    entries and labelled rows (which variant, beta and temperature it shows)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = one_judge(table, primary_judge)
    sft = rows[rows["variant"] == "sft"]
    paths = {name: out_dir / f"{name}.png" for name in PLOTS}
    series = {}
    series["reward_vs_kl"] = plot_frontier(rows, paths["reward_vs_kl"], reward_label)
    series["win_rate_vs_beta"] = _plot_vs_beta(rows, paths["win_rate_vs_beta"], "win_rate", f"win rate vs SFT ({primary_judge})", "Win rate vs beta", 0.5,
                  ci=("win_rate_ci_low", "win_rate_ci_high"))
    series["length_vs_beta"] = _plot_vs_beta(rows, paths["length_vs_beta"], "length_mean", "response length (tokens)", "Length vs beta",
                  float(sft["length_mean"].mean()) if len(sft) else None)
    series["raw_vs_lc_win_rate"] = plot_raw_vs_lc(rows, paths["raw_vs_lc_win_rate"], primary_judge)
    series["win_rate_vs_temperature"] = plot_win_rate_vs_temperature(rows, paths["win_rate_vs_temperature"], primary_judge)
    series["score_vs_length"] = plot_score_vs_length(scores, dict(zip(rows["policy"], rows["variant"])),
                                                     paths["score_vs_length"], score_judge)
    series_file = out_dir / "series.json"
    series_file.write_text(json.dumps(series, indent=2, ensure_ascii=False))
    return [*paths.values(), series_file]


def summary_html(table: pd.DataFrame, title: str) -> str:
    """The summary table as one standalone HTML page for the Snakemake report (which shows
    HTML outputs inline but offers CSV files only as downloads): one section per judge,
    numbers to 3 decimals, empty cells where a column does not apply."""
    style = ("body{font-family:sans-serif;font-size:13px;margin:12px} table{border-collapse:collapse}"
             "th,td{border:1px solid #ccc;padding:2px 6px;text-align:right;white-space:nowrap}"
             "th{background:#f2f2f2;position:sticky;top:0} td:first-child,th:first-child{text-align:left}")
    sections = []
    for judge, rows in table.groupby("judge", sort=False):
        shown = rows.drop(columns=["judge"]).dropna(axis=1, how="all")
        for column in shown.columns[shown.dtypes.astype(str) == "Int64"]:  # nullable ints: blank, not <NA>
            shown[column] = shown[column].astype(object).where(shown[column].notna(), "")
        body = shown.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.3f}", border=0)
        sections.append(f"<h2>judge: {html.escape(str(judge))}</h2>\n{body}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>\n" + "\n".join(sections) + "</body></html>")
