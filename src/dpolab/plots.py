"""The study's plots, drawn from the seed-aggregated summary (one point per variant, beta and
temperature, with its crossed-bootstrap interval as error bars).

One colour per variant and one marker per temperature, the same in every plot (`Style`); SFT is
black, with its temperature's marker. Legends sit outside the axes, so they cover no point.
Beta labels are placed next to their points where they overlap no other label (`place_labels`):
matplotlib has no overlap avoidance of its own, and adjustText is not in the stack for one
function. Each plot's legend entries, row labels and point labels, with the labels' boxes, go to
plots/series.json, so a test can check that they are distinct and do not overlap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from dpolab.winrate import spearman

SFT = "sft"
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "h"]
LINESTYLES = ["-", "--", ":", "-."]
PLOTS = (
    "reward_vs_kl",
    "frontier_by_variant",
    "win_rate_vs_beta",
    "length_vs_beta",
    "raw_vs_lc_win_rate",
    "win_rate_vs_temperature",
    "score_vs_length",
)


@dataclass
class Style:
    """Colour per variant (grid order), marker per temperature; SFT black."""

    variants: list[str]
    temperatures: list[float]

    def colour(self, variant: str):
        if variant == SFT:
            return "black"
        palette = plt.get_cmap("tab10" if len(self.variants) <= 10 else "tab20")
        return palette(self.variants.index(variant) % palette.N)

    def marker(self, temperature: float) -> str:
        return MARKERS[self.temperatures.index(float(temperature)) % len(MARKERS)]

    def legend(self, *, sft_temperatures=(), extra=()) -> list:
        """Handles: a line per variant (its colour), a black marker per temperature, an SFT entry
        per temperature given."""
        handles = [Line2D([], [], color=self.colour(v), lw=2, label=v) for v in self.variants]
        if len(self.temperatures) > 1:
            handles += [
                Line2D([], [], color="grey", marker=self.marker(t), ls="", label=f"T={t:g}") for t in self.temperatures
            ]
        handles += [
            Line2D([], [], color="black", marker=self.marker(t), ls="", markersize=9, label=f"SFT (T={t:g})")
            for t in sft_temperatures
        ]
        return handles + list(extra)

    @classmethod
    def of(cls, table: pd.DataFrame, variants: list[str] | None = None) -> Style:
        grid = [v for v in dict.fromkeys(table["variant"]) if v != SFT]
        ordered = [v for v in (variants or []) if v in grid] + [v for v in grid if v not in (variants or [])]
        return cls(ordered, sorted(float(t) for t in table["temperature"].unique()))


@dataclass
class Shown:
    """What one plot shows, for plots/series.json."""

    legend: list[str] = field(default_factory=list)
    rows: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # the point each label names: variant, beta, temperature
    label_boxes: list[list[float]] = field(default_factory=list)  # pixels in the saved image


def _overlaps(box, boxes, pad=1.0) -> bool:
    x0, y0, x1, y1 = box
    return any(x0 - pad < b[2] and b[0] - pad < x1 and y0 - pad < b[3] and b[1] - pad < y1 for b in boxes)


DIRECTIONS = [(1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)]
DISTANCES = (4, 9, 15, 22, 30, 40, 52)  # points


def _candidate(anchor, size, direction, distance_px):
    """The box (pixels) of a label of `size` set `distance_px` from `anchor` in `direction`,
    aligned away from the point (left/bottom edge towards it), as annotate places it."""
    (x, y), (width, height), (dx, dy) = anchor, size, direction
    left = x + dx * distance_px - (0 if dx > 0 else width if dx < 0 else width / 2)
    bottom = y + dy * distance_px - (0 if dy > 0 else height if dy < 0 else height / 2)
    return (left, bottom, left + width, bottom + height)


def place_labels(ax, points: list[tuple[float, float, str, str, object]], placed: list, shown: Shown) -> None:
    """Label each (x, y, text, identity, colour) point: the first of 8 directions at growing
    distances whose box overlaps no label placed before and stays in the figure; a leader line
    joins a label set further out. Candidates are measured arithmetically (a label's size once),
    and only the chosen one is drawn; the boxes recorded are the drawn labels' own. `placed`
    holds the boxes of the figure's labels so far."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    fx0, fy0, fx1, fy1 = fig.bbox.extents
    points_to_px = fig.dpi / 72.0
    for x, y, text, identity, colour in points:
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        probe = ax.text(0, 0, text, fontsize=7)
        extent = probe.get_window_extent(renderer)
        probe.remove()
        size = (extent.width, extent.height)
        anchor = ax.transData.transform((x, y))
        choice = None
        for distance in DISTANCES:
            for direction in DIRECTIONS:
                box = _candidate(anchor, size, direction, distance * points_to_px)
                if fx0 <= box[0] and box[2] <= fx1 and fy0 <= box[1] and box[3] <= fy1 and not _overlaps(box, placed):
                    choice = (direction, distance)
                    break
            if choice:
                break
        (dx, dy), distance = choice or ((1, 1), DISTANCES[0])  # nowhere free: the nearest spot (series.json shows it)
        label = ax.annotate(
            text,
            (x, y),
            xytext=(dx * distance, dy * distance),
            textcoords="offset points",
            fontsize=7,
            color=colour,
            ha="left" if dx > 0 else "right" if dx < 0 else "center",
            va="bottom" if dy > 0 else "top" if dy < 0 else "center",
            arrowprops={"arrowstyle": "-", "color": colour, "lw": 0.5, "alpha": 0.6} if distance > 9 else None,
        )
        box = tuple(label.get_window_extent(renderer).extents)
        placed.append(box)
        shown.labels.append(identity)
        shown.label_boxes.append([round(v, 1) for v in box])


def _err(mid, low, high):
    """Error bar lengths from an interval (clipped at 0: an interval built by dpolab.aggregate
    contains its point, older tables might not)."""
    mid, low, high = (np.asarray(v, dtype=float) for v in (mid, low, high))
    return np.vstack([np.clip(mid - low, 0, None), np.clip(high - mid, 0, None)])


def _legend_outside(fig, ax, handles, shown: Shown) -> None:
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    shown.legend += [h.get_label() for h in handles]


def _legend_boxes(fig) -> list:
    """The boxes (pixels) of the figure's legends, where no label may go."""
    renderer = fig.canvas.get_renderer()
    return [tuple(ax.get_legend().get_window_extent(renderer).extents) for ax in fig.axes if ax.get_legend()]


def _finish(fig, path: Path, shown: Shown) -> Shown:
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return shown


def _dodge(index: int, count: int, width: float = 0.06) -> float:
    """A multiplicative offset on a log axis (additive on a linear one) that spreads `count`
    series' points at the same x so their error bars do not hide each other."""
    return (index - (count - 1) / 2) * width


def plot_frontier(table: pd.DataFrame, path: Path, style: Style, reward_label: str) -> Shown:
    """Reward against KL to the reference (the DPO paper's Fig. 2 frontier), a panel per
    temperature: each variant's betas joined in order, with x and y error bars; SFT at KL 0."""
    shown = Shown()
    temperatures = style.temperatures
    fig, axes = plt.subplots(
        1, len(temperatures), figsize=(4.2 * len(temperatures) + 1.8, 4.4), sharey=True, squeeze=False
    )
    for ax, temperature in zip(axes[0], temperatures):
        at_t = table[np.isclose(table["temperature"], temperature)]
        for variant in style.variants:
            rows = at_t[at_t["variant"] == variant].sort_values("beta", ascending=False)
            if not len(rows):
                continue
            ax.errorbar(
                rows["kl_mean"],
                rows["reward_mean"],
                xerr=_err(
                    rows["kl_mean"], rows.get("kl_ci_low", rows["kl_mean"]), rows.get("kl_ci_high", rows["kl_mean"])
                ),
                yerr=_err(rows["reward_mean"], rows["reward_ci_low"], rows["reward_ci_high"]),
                color=style.colour(variant),
                marker=style.marker(temperature),
                ms=5,
                lw=1.2,
                capsize=2,
                elinewidth=0.8,
            )
        sft = at_t[at_t["variant"] == SFT]
        ax.errorbar(
            sft["kl_mean"],
            sft["reward_mean"],
            yerr=_err(sft["reward_mean"], sft["reward_ci_low"], sft["reward_ci_high"]),
            color="black",
            marker=style.marker(temperature),
            ms=9,
            ls="",
            capsize=2,
            zorder=3,
        )
        ax.set_title(f"T={temperature:g}")
        ax.set_xlabel("KL(policy || reference), nats per sample")
    axes[0][0].set_ylabel(reward_label)
    fig.suptitle("Reward vs KL frontier (mean over seeds, bars: 95% CI over seeds and prompts)", fontsize=9)
    _legend_outside(fig, axes[0][-1], style.legend(sft_temperatures=temperatures), shown)
    fig.tight_layout()
    placed: list = _legend_boxes(fig)
    for ax, temperature in zip(axes[0], temperatures):
        at_t = table[np.isclose(table["temperature"], temperature)]
        points = [
            (
                r["kl_mean"],
                r["reward_mean"],
                f"β={r['beta']:g}",
                f"{r['variant']} β={r['beta']:g} T={temperature:g}",
                style.colour(r["variant"]),
            )
            for _, r in at_t[at_t["variant"] != SFT].iterrows()
        ]
        points += [
            (r["kl_mean"], r["reward_mean"], "SFT", f"SFT T={temperature:g}", "black")
            for _, r in at_t[at_t["variant"] == SFT].iterrows()
        ]
        place_labels(ax, points, placed, shown)
    return _finish(fig, path, shown)


def plot_frontier_by_variant(table: pd.DataFrame, path: Path, style: Style, reward_label: str) -> Shown:
    """One small panel per variant: its frontier at each temperature in its colour, every other
    variant's points in grey behind it, so each curve is visible however close the points are."""
    shown = Shown()
    count = len(style.variants)
    columns = min(count, 4)
    rows_n = -(-count // columns)
    fig, axes = plt.subplots(
        rows_n, columns, figsize=(3.2 * columns + 1.6, 2.8 * rows_n + 0.6), sharex=True, sharey=True, squeeze=False
    )
    grid = table[table["variant"] != SFT]
    sft = table[table["variant"] == SFT]
    for index, variant in enumerate(style.variants):
        ax = axes[index // columns][index % columns]
        others = grid[grid["variant"] != variant]
        ax.scatter(others["kl_mean"], others["reward_mean"], s=8, color="0.8", zorder=1)
        for temperature in style.temperatures:
            rows = grid[(grid["variant"] == variant) & np.isclose(grid["temperature"], temperature)].sort_values(
                "beta", ascending=False
            )
            start = sft[np.isclose(sft["temperature"], temperature)]
            kl = np.concatenate([start["kl_mean"], rows["kl_mean"]])
            reward = np.concatenate([start["reward_mean"], rows["reward_mean"]])
            ax.plot(kl, reward, color=style.colour(variant), marker=style.marker(temperature), ms=4, lw=1.2, zorder=2)
            ax.errorbar(
                rows["kl_mean"],
                rows["reward_mean"],
                yerr=_err(rows["reward_mean"], rows["reward_ci_low"], rows["reward_ci_high"]),
                ls="",
                color=style.colour(variant),
                capsize=2,
                elinewidth=0.8,
                zorder=2,
            )
            ax.scatter(
                start["kl_mean"], start["reward_mean"], color="black", marker=style.marker(temperature), s=40, zorder=3
            )
        ax.set_title(variant, fontsize=9, color=style.colour(variant))
        shown.rows.append(variant)
    for index in range(count, rows_n * columns):
        axes[index // columns][index % columns].axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("KL to the reference")
    for ax in axes[:, 0]:
        ax.set_ylabel(reward_label, fontsize=8)
    fig.suptitle("Each variant's frontier from SFT (black) over its betas; grey: the other variants", fontsize=9)
    _legend_outside(fig, axes[0][-1], style.legend(sft_temperatures=style.temperatures)[len(style.variants) :], shown)
    fig.tight_layout()
    return _finish(fig, path, shown)


def _beta_axis(ax, betas) -> None:
    """A log axis ticked at the grid's betas only, written plainly (matplotlib's minor log labels
    overprint each other over a short range)."""
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks(betas, [f"{b:g}" for b in betas])
    ax.set_xlabel("beta")


def _plot_vs_beta(
    table: pd.DataFrame,
    path: Path,
    style: Style,
    column: str,
    ci: tuple[str, str] | None,
    ylabel: str,
    title: str,
    sft_lines: dict[float, float] | float,
) -> Shown:
    """A metric against beta, a panel per temperature, a line per variant; `sft_lines` is SFT's
    level per temperature (or one level for all, e.g. a win rate's 0.5)."""
    shown = Shown()
    temperatures = style.temperatures
    fig, axes = plt.subplots(
        1, len(temperatures), figsize=(3.8 * len(temperatures) + 1.8, 4.2), sharey=True, squeeze=False
    )
    width = min(0.03, 0.2 / max(len(style.variants), 1))  # the spread of one beta's points stays within 0.2 decades
    for ax, temperature in zip(axes[0], temperatures):
        for index, variant in enumerate(style.variants):
            rows = table[(table["variant"] == variant) & np.isclose(table["temperature"], temperature)].sort_values(
                "beta"
            )
            if not len(rows):
                continue
            x = rows["beta"].to_numpy(float) * 10 ** _dodge(index, len(style.variants), width)
            yerr = _err(rows[column], rows[ci[0]], rows[ci[1]]) if ci else None
            ax.errorbar(
                x,
                rows[column],
                yerr=yerr,
                color=style.colour(variant),
                marker=style.marker(temperature),
                ms=5,
                lw=1.2,
                capsize=2,
                elinewidth=0.8,
            )
        level = sft_lines if not isinstance(sft_lines, dict) else sft_lines.get(float(temperature))
        if level is not None:
            ax.axhline(level, color="black", lw=1, ls="--")
        _beta_axis(ax, sorted(table["beta"].dropna().unique()))
        ax.set_title(f"T={temperature:g}")
    axes[0][0].set_ylabel(ylabel)
    fig.suptitle(f"{title}; a beta's points are spread slightly apart so every bar stays visible", fontsize=9)
    sft_label = "SFT (0.5)" if not isinstance(sft_lines, dict) else "SFT (at each T)"
    extra = [Line2D([], [], color="black", lw=1, ls="--", label=sft_label)] if sft_lines else []
    _legend_outside(fig, axes[0][-1], style.legend(extra=extra), shown)
    fig.tight_layout()
    return _finish(fig, path, shown)


def _grid_label(row) -> str:
    return f"{row['variant']} β={row['beta']:g}"


def plot_raw_vs_lc(table: pd.DataFrame, path: Path, style: Style, judge: str) -> Shown:
    """Raw and length-controlled win rate against SFT per (variant, beta), a panel per temperature."""
    shown = Shown()
    grid = table[table["variant"] != SFT]
    order = grid.assign(_v=grid["variant"].map(style.variants.index)).sort_values(["_v", "beta"])
    labels = list(dict.fromkeys(_grid_label(r) for _, r in order.iterrows()))
    fig, axes = plt.subplots(
        1,
        len(style.temperatures),
        figsize=(4.2 * len(style.temperatures) + 1.8, 0.32 * len(labels) + 1.8),
        sharey=True,
        squeeze=False,
    )
    for ax, temperature in zip(axes[0], style.temperatures):
        rows = order[np.isclose(order["temperature"], temperature)]
        y = np.array([labels.index(_grid_label(r)) for _, r in rows.iterrows()], dtype=float)
        for offset, (column, fill) in enumerate((("win_rate", "full"), ("lc_win_rate", "none"))):
            if column not in rows or rows[column].isna().all():
                continue
            for (_, row), position in zip(rows.iterrows(), y):
                ax.errorbar(
                    row[column],
                    position + 0.18 * (offset * 2 - 1),
                    xerr=_err([row[column]], [row[f"{column}_ci_low"]], [row[f"{column}_ci_high"]]),
                    color=style.colour(row["variant"]),
                    marker="o",
                    fillstyle=fill,
                    ls="",
                    capsize=2,
                    elinewidth=0.8,
                )
        ax.axvline(0.5, color="black", ls="--", lw=1)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_ylim(len(labels) - 0.5, -0.5)
        ax.set_xlabel(f"win rate vs SFT ({judge})")
        ax.set_title(f"T={temperature:g}")
    shown.rows = labels
    handles = [
        Line2D([], [], color="grey", marker="o", ls="", label="raw"),
        Line2D([], [], color="grey", marker="o", fillstyle="none", ls="", label="length-controlled"),
    ]
    fig.suptitle("Raw (filled) and length-controlled (open) win rate, bars: 95% CI over seeds and prompts", fontsize=9)
    _legend_outside(fig, axes[0][-1], handles, shown)
    fig.tight_layout()
    return _finish(fig, path, shown)


def plot_win_rate_vs_temperature(table: pd.DataFrame, path: Path, style: Style, judge: str) -> Shown:
    """Win rate against the sampling temperature, a panel per beta, a line per variant."""
    shown = Shown()
    grid = table[table["variant"] != SFT]
    betas = sorted(grid["beta"].unique())
    fig, axes = plt.subplots(1, len(betas), figsize=(3.8 * len(betas) + 1.8, 4.2), sharey=True, squeeze=False)
    span = (max(style.temperatures) - min(style.temperatures)) or 1.0
    width = min(0.012, 0.08 / max(len(style.variants), 1))
    for ax, beta in zip(axes[0], betas):
        for index, variant in enumerate(style.variants):
            rows = grid[(grid["variant"] == variant) & np.isclose(grid["beta"], beta)].sort_values("temperature")
            if not len(rows):
                continue
            x = rows["temperature"].to_numpy(float) + span * _dodge(index, len(style.variants), width)
            ax.plot(x, rows["win_rate"], color=style.colour(variant), lw=1.2)
            for xi, (_, row) in zip(x, rows.iterrows()):
                ax.errorbar(
                    xi,
                    row["win_rate"],
                    yerr=_err([row["win_rate"]], [row["win_rate_ci_low"]], [row["win_rate_ci_high"]]),
                    color=style.colour(variant),
                    marker=style.marker(row["temperature"]),
                    ms=5,
                    capsize=2,
                    elinewidth=0.8,
                )
        ax.axhline(0.5, color="black", ls="--", lw=1)
        ax.set_xticks(style.temperatures, [f"{t:g}" for t in style.temperatures])
        ax.set_xlabel("sampling temperature")
        ax.set_title(f"β={beta:g}")
    axes[0][0].set_ylabel(f"win rate vs SFT ({judge})")
    fig.suptitle("Win rate vs temperature (mean over seeds, bars: 95% CI over seeds and prompts)", fontsize=9)
    _legend_outside(
        fig, axes[0][-1], style.legend(extra=[Line2D([], [], color="black", ls="--", lw=1, label="SFT (0.5)")]), shown
    )
    fig.tight_layout()
    return _finish(fig, path, shown)


def plot_score_vs_length(scores: pd.DataFrame, variants: dict, path: Path, style: Style, judge: str) -> Shown:
    """Every generation's score under `judge` against its length, coloured by variant."""
    shown = Shown()
    rows = scores[scores["judge"] == judge].assign(variant=lambda f: f["policy"].map(variants))
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    jitter = np.random.default_rng(0).uniform(-0.3, 0.3, size=len(rows))
    rows = rows.assign(x=rows["completion_tokens"].to_numpy(float) + jitter)
    for variant in [SFT, *style.variants]:
        part = rows[rows["variant"] == variant]
        if len(part):
            ax.scatter(part["x"], part["score"], s=6, alpha=0.4, color=style.colour(variant))
    rho = spearman(rows["score"], rows["completion_tokens"])
    ax.set_xlabel("response length (tokens)")
    ax.set_ylabel(f"{judge} score")
    ax.set_title(f"Score vs length (Spearman ρ = {rho:.2f}, all generations, every seed)", fontsize=9)
    handles = [Line2D([], [], color="black", marker="o", ls="", label="SFT")]
    handles += [Line2D([], [], color=style.colour(v), marker="o", ls="", label=v) for v in style.variants]
    _legend_outside(fig, ax, handles, shown)
    fig.tight_layout()
    return _finish(fig, path, shown)


def plot_checkpoint_frontier(curves: pd.DataFrame, path: Path, style: Style, reward_label: str) -> Shown:
    """Each (variant, beta)'s path through (KL, reward) over its training steps, from SFT (step 0)
    through its checkpoints to the final policy (the DPO paper's Fig. 2 traced over training), a
    panel per temperature: a colour per variant, a line style per beta, points at the mean over
    seeds, the last step labelled with its variant and beta."""
    shown = Shown()
    temperatures = style.temperatures
    betas = sorted(curves.loc[curves["variant"] != SFT, "beta"].dropna().unique())
    fig, axes = plt.subplots(
        1, len(temperatures), figsize=(4.2 * len(temperatures) + 1.8, 4.4), sharey=True, squeeze=False
    )
    ends = {}
    for ax, temperature in zip(axes[0], temperatures):
        at_t = curves[np.isclose(curves["temperature"], temperature)]
        sft = at_t[at_t["variant"] == SFT]
        for variant in style.variants:
            for beta_index, beta in enumerate(betas):
                rows = at_t[(at_t["variant"] == variant) & np.isclose(at_t["beta"], beta)].sort_values("step")
                if not len(rows):
                    continue
                kl = np.concatenate([sft["kl_mean"], rows["kl_mean"]])
                reward = np.concatenate([sft["reward_mean"], rows["reward_mean"]])
                ax.plot(
                    kl,
                    reward,
                    color=style.colour(variant),
                    ls=LINESTYLES[beta_index % len(LINESTYLES)],
                    marker=style.marker(temperature),
                    ms=4,
                    lw=1.2,
                )
                last = rows.iloc[-1]
                ends.setdefault(temperature, []).append(
                    (
                        last["kl_mean"],
                        last["reward_mean"],
                        f"{variant} β={beta:g}",
                        f"{variant} β={beta:g} T={temperature:g}",
                        style.colour(variant),
                    )
                )
        ax.scatter(sft["kl_mean"], sft["reward_mean"], color="black", marker=style.marker(temperature), s=60, zorder=3)
        ax.set_title(f"T={temperature:g}")
        ax.set_xlabel("KL(policy || reference), nats per sample")
    axes[0][0].set_ylabel(reward_label)
    last_step = int(curves["step"].max())
    fig.suptitle(
        f"Reward vs KL over training: SFT (step 0), checkpoints, last step {last_step} labelled (mean over seeds)",
        fontsize=9,
    )
    beta_lines = [
        Line2D([], [], color="grey", ls=LINESTYLES[i % len(LINESTYLES)], label=f"β={b:g}") for i, b in enumerate(betas)
    ]
    _legend_outside(fig, axes[0][-1], style.legend(sft_temperatures=temperatures, extra=beta_lines), shown)
    fig.tight_layout()
    placed: list = _legend_boxes(fig)
    for ax, temperature in zip(axes[0], temperatures):
        place_labels(ax, ends.get(temperature, []), placed, shown)
    return _finish(fig, path, shown)


def write_checkpoint_plot(
    curves: pd.DataFrame, out_dir: Path, *, reward_label: str, variants: list[str] | None = None
) -> Path:
    """plots/checkpoint_frontier.png from checkpoints.csv's rows, its labels added to plots/series.json."""
    path = out_dir / "checkpoint_frontier.png"
    shown = plot_checkpoint_frontier(curves, path, Style.of(curves, variants), reward_label)
    series_file = out_dir / "series.json"
    series = json.loads(series_file.read_text()) if series_file.exists() else {}
    series["checkpoint_frontier"] = vars(shown)
    series_file.write_text(json.dumps(series, indent=2, ensure_ascii=False))
    return path


def write_plots(
    summary: pd.DataFrame,
    scores: pd.DataFrame,
    policy_variants: dict[str, str],
    out_dir: Path,
    *,
    primary_judge: str,
    score_judge: str,
    reward_label: str = "gold reward (P(positive))",
    variants: list[str] | None = None,
) -> list[Path]:
    """The study's plots from the seed-aggregated summary (dpolab.aggregate); win rates are the
    primary judge's, the scatter uses `score_judge` (a pointwise judge; every study has one) over
    every policy's generations (`policy_variants`: policy -> variant). `variants` orders the colours
    (the config's grid). Also plots/series.json (see the module doc)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = summary[summary["judge"] == primary_judge]
    style = Style.of(rows, variants)
    sft = rows[rows["variant"] == SFT]
    paths = {name: out_dir / f"{name}.png" for name in PLOTS}
    bars = ("win_rate_ci_low", "win_rate_ci_high")
    sft_length = {float(r["temperature"]): float(r["length_mean"]) for _, r in sft.iterrows()}
    shown = {
        "reward_vs_kl": plot_frontier(rows, paths["reward_vs_kl"], style, reward_label),
        "frontier_by_variant": plot_frontier_by_variant(rows, paths["frontier_by_variant"], style, reward_label),
        "win_rate_vs_beta": _plot_vs_beta(
            rows[rows["variant"] != SFT],
            paths["win_rate_vs_beta"],
            style,
            "win_rate",
            bars,
            f"win rate vs SFT ({primary_judge})",
            "Win rate vs beta (mean over seeds, bars: 95% CI over seeds and prompts)",
            0.5,
        ),
        "length_vs_beta": _plot_vs_beta(
            rows[rows["variant"] != SFT],
            paths["length_vs_beta"],
            style,
            "length_mean",
            ("length_ci_low", "length_ci_high") if "length_ci_low" in rows else None,
            "response length (tokens)",
            "Length vs beta (mean over seeds, bars: 95% CI)",
            sft_length,
        ),
        "raw_vs_lc_win_rate": plot_raw_vs_lc(rows, paths["raw_vs_lc_win_rate"], style, primary_judge),
        "win_rate_vs_temperature": plot_win_rate_vs_temperature(
            rows, paths["win_rate_vs_temperature"], style, primary_judge
        ),
        "score_vs_length": plot_score_vs_length(scores, policy_variants, paths["score_vs_length"], style, score_judge),
    }
    series_file = out_dir / "series.json"
    series_file.write_text(json.dumps({name: vars(s) for name, s in shown.items()}, indent=2, ensure_ascii=False))
    return [*paths.values(), series_file]
