"""The study's plots (dpolab.plots) drawn from a simulated two-seed study of the default grid's
size: every plot written, every label distinct, no two point labels overlapping."""

import json
from itertools import combinations

import numpy as np
import pytest

from dpolab.aggregate import AggregateSettings, aggregate, checkpoint_curves
from dpolab.plots import PLOTS, Style, write_checkpoint_plot, write_plots
from dpolab.tracking import curve_metrics
from helpers.examples import metrics_rows, simulated_study

VARIANTS = ["dpo", "ipo", "cdpo", "rdpo", "simpo", "kto", "orpo"]


@pytest.fixture(scope="module")
def plots(tmp_path_factory):
    strengths = dict(zip(VARIANTS, [0.8, 0.3, 0.7, 0.75, 0.5, 0.6, 0.2]))
    tables = simulated_study(
        np.random.default_rng(5), strengths=strengths, betas=(0.05, 0.1, 0.5), seeds=2, temperatures=(0.0, 0.7, 1.0)
    )
    summary, _ = aggregate(tables, AggregateSettings(resamples=200))
    scores = tables.outcomes.assign(judge="gold", score=tables.outcomes["reward"])
    out = tmp_path_factory.mktemp("plots")
    paths = write_plots(
        summary,
        scores,
        dict(zip(tables.by_seed["policy"], tables.by_seed["variant"])),
        out,
        primary_judge="gold",
        score_judge="gold",
        variants=VARIANTS,
    )
    return summary, paths, json.loads((out / "series.json").read_text())


def test_every_plot_is_written_and_shows_every_variant(plots):
    summary, paths, series = plots
    assert sorted(p.name for p in paths) == sorted([*(f"{name}.png" for name in PLOTS), "series.json"])
    assert all(p.read_bytes()[:4] == b"\x89PNG" and p.stat().st_size > 5000 for p in paths if p.suffix == ".png")
    assert set(series) == set(PLOTS)
    for name in PLOTS:
        shown = series[name]["legend"] + series[name]["rows"] + series[name]["labels"]
        for variant in VARIANTS:
            assert any(label.startswith(variant) for label in shown), (name, variant)


def test_labels_are_distinct_and_do_not_overlap(plots):
    _, _, series = plots
    for name, shown in series.items():
        assert len(set(shown["legend"])) == len(shown["legend"]), (name, shown["legend"])
        assert len(set(shown["rows"])) == len(shown["rows"]), (name, shown["rows"])
        assert len(set(shown["labels"])) == len(shown["labels"]), (name, shown["labels"])
        for (a, box_a), (b, box_b) in combinations(zip(shown["labels"], shown["label_boxes"]), 2):
            apart = box_a[2] <= box_b[0] or box_b[2] <= box_a[0] or box_a[3] <= box_b[1] or box_b[3] <= box_a[1]
            assert apart, (name, a, b, box_a, box_b)
    frontier = series["reward_vs_kl"]
    # every grid point and SFT at each temperature is labelled once; SFT per temperature in the legend
    assert len(frontier["labels"]) == 3 * (len(VARIANTS) * 3 + 1)
    assert {"SFT (T=0)", "SFT (T=0.7)", "SFT (T=1)"} <= set(frontier["legend"])
    assert len(series["raw_vs_lc_win_rate"]["rows"]) == len(VARIANTS) * 3  # one row per (variant, beta), not per seed


def test_one_colour_per_variant_and_one_marker_per_temperature(plots):
    summary, _, _ = plots
    style = Style.of(summary, VARIANTS)
    assert style.variants == VARIANTS
    assert len({style.colour(v) for v in VARIANTS}) == len(VARIANTS) and style.colour("sft") == "black"
    assert len({style.marker(t) for t in style.temperatures}) == 3
    many = Style([f"v{i}" for i in range(14)], [1.0])  # beyond tab10's 10 colours: tab20, still distinct
    assert len({many.colour(v) for v in many.variants}) == 14


def test_checkpoint_plot_labels_each_curve_once_and_mlflow_series_run_over_steps(tmp_path):
    _, curves = checkpoint_curves(metrics_rows())
    path = write_checkpoint_plot(curves, tmp_path, reward_label="reward", variants=["dpo", "kto"])
    assert path.read_bytes()[:4] == b"\x89PNG"
    shown = json.loads((tmp_path / "series.json").read_text())["checkpoint_frontier"]
    assert sorted(shown["labels"]) == sorted(f"{v} β=0.1 T={t}" for v in ("dpo", "kto") for t in ("0", "1"))
    assert {"dpo", "kto", "β=0.1", "SFT (T=0)", "SFT (T=1)"} <= set(shown["legend"])
    metrics = curve_metrics(curves)
    series = {}
    for metric in metrics:
        series.setdefault(metric.key, []).append((metric.step, metric.value))
    assert len(series) == 2 * 2 * 2  # (variant, temperature) x (reward, kl)
    assert series["checkpoints/dpo/beta_0.1/temp_1/kl_mean"] == [(0, 0.0), (1, 1.5), (2, 3.0), (4, 6.0)]
