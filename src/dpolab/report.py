"""The study's summary table and plots."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

SUMMARY_COLUMNS = [
    "policy", "variant", "loss", "beta", "seed", "temperature", "n",
    "reward_mean", "reward_ci_low", "reward_ci_high", "vader_mean", "kl_mean",
    "win_rate", "win_rate_ci_low", "win_rate_ci_high", "length_mean", "length_median", "chars_mean",
]


def summary_table(metric_files: list[Path]) -> pd.DataFrame:
    """One row per (policy, temperature) from evaluate's metrics.json files."""
    rows = [json.loads(Path(f).read_text()) for f in metric_files]
    table = pd.DataFrame(rows)
    missing = [c for c in SUMMARY_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"metrics files lack columns {missing}")
    table = table[SUMMARY_COLUMNS + [c for c in table.columns if c not in SUMMARY_COLUMNS]]
    table["seed"] = table["seed"].astype("Int64")  # empty for SFT, an integer otherwise
    order = table["variant"].ne("sft")  # SFT first, then the grid in config order
    return table.assign(_o=order).sort_values(["_o", "variant", "beta", "seed", "temperature"], kind="stable").drop(columns="_o")


def _by_variant(table: pd.DataFrame):
    grid = table[table["variant"] != "sft"]
    return grid.groupby("variant", sort=False)


def plot_frontier(table: pd.DataFrame, path: Path) -> None:
    """Gold reward against KL to the reference: the DPO paper's Fig. 2 frontier."""
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
    ax.set_ylabel("gold reward (P(positive))")
    ax.set_title("Reward vs KL frontier")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_vs_beta(table: pd.DataFrame, path: Path, column: str, ylabel: str, title: str, baseline: float | None, ci=None) -> None:
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for variant, rows in _by_variant(table):
        for temperature, at_t in rows.groupby("temperature"):
            means = at_t.groupby("beta")[[column] + (list(ci) if ci else [])].mean().sort_index()
            label = f"{variant} (T={temperature:g})"
            if ci:
                err = [means[column] - means[ci[0]], means[ci[1]] - means[column]]
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
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_plots(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    sft = table[table["variant"] == "sft"]
    paths = {name: out_dir / f"{name}.png" for name in ("reward_vs_kl", "win_rate_vs_beta", "length_vs_beta")}
    plot_frontier(table, paths["reward_vs_kl"])
    _plot_vs_beta(table, paths["win_rate_vs_beta"], "win_rate", "win rate vs SFT (gold judge)", "Win rate vs beta", 0.5,
                  ci=("win_rate_ci_low", "win_rate_ci_high"))
    _plot_vs_beta(table, paths["length_vs_beta"], "length_mean", "response length (tokens)", "Length vs beta",
                  float(sft["length_mean"].mean()) if len(sft) else None)
    return list(paths.values())
