"""A two-seed study: the finished smoke study (a copy) with a second seed of dpo and kto trained,
sampled and evaluated, then compared and summarised over seeds: summary.csv (one row per variant,
beta, temperature and judge), comparisons.csv and the plots' labels."""

import json
import os
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.workflow import copy_study

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
GRID = ["dpo", "kto"]


@pytest.fixture(scope="module")
def two_seeds(smoke_studies, tmp_path_factory):
    work = copy_study(smoke_studies.sqlite, tmp_path_factory.mktemp("seeds") / "work")
    # the pairwise judge's verdicts exist (for seed 0 only), and by mtime alone Snakemake takes them
    # as up to date: forced, so it judges the new policies too (and everything after it reruns)
    command = [
        SNAKEMAKE,
        "--cores",
        "2",
        "--forcerun",
        "pairwise_judge",
        "--config",
        f"grid={{variants: [{', '.join(GRID)}], betas: [0.1], seeds: [0, 1]}}",
        "--rerun-triggers",
        "mtime",
        "--configfile",
        "configs/smoke.yaml",
    ]
    done = subprocess.run(
        command, cwd=work, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=1500
    )
    assert done.returncode == 0, done.stderr[-6000:]
    return work / "results" / "smoke", done


def test_only_the_new_seed_was_trained(two_seeds):
    study, done = two_seeds
    assert "rule sft:" not in done.stderr and "rule pairs:" not in done.stderr
    for variant in GRID:
        assert (study / "dpo" / f"variant~{variant}" / "beta~0.1" / "seed~1" / "model").is_dir()


def test_summary_aggregates_two_seeds(two_seeds):
    study, _ = two_seeds
    table, by_seed = pd.read_csv(study / "summary.csv"), pd.read_csv(study / "summary_by_seed.csv")
    keys = ["variant", "beta", "temperature", "judge"]
    assert not table.duplicated(keys).any()
    assert set(table["variant"]) == {"sft", *GRID}
    grid = table[table["variant"] != "sft"]
    assert (grid["seeds"] == 2).all() and len(by_seed) == len(table) + len(grid)
    for column, name in (
        ("reward_mean", "reward"),
        ("kl_mean", "kl"),
        ("win_rate", "win_rate"),
        ("lc_win_rate", "lc_win_rate"),
        ("length_mean", "length"),
    ):
        # the mean over seeds of the per-seed values; a crossed interval that holds it
        per_seed = by_seed[by_seed["variant"] != "sft"].groupby(keys)[column].mean()
        assert grid.set_index(keys)[column].sort_index().to_numpy() == pytest.approx(
            per_seed.sort_index().to_numpy()
        ), column
        assert ((grid[f"{name}_ci_low"] <= grid[column]) & (grid[column] <= grid[f"{name}_ci_high"])).all(), column
        spread = by_seed[by_seed["variant"] != "sft"].groupby(keys)[column].std()
        assert grid.set_index(keys)[f"{name}_seed_sd"].sort_index().to_numpy() == pytest.approx(
            spread.sort_index().to_numpy()
        ), column


def test_comparisons_pair_the_variants_at_the_beta_and_at_matched_kl(two_seeds):
    study, _ = two_seeds
    table = pd.read_csv(study / "comparisons.csv")
    assert set(zip(table["variant_a"], table["variant_b"])) == {("dpo", "kto")}
    at_beta = table[table["comparison"] == "at_beta"]
    assert set(at_beta["metric"]) >= {"win_rate", "lc_win_rate", "reward", "kl", "length"}
    assert set(at_beta["judge"]) == {"gold", "vader", "llm"}
    assert at_beta["difference"].to_numpy() == pytest.approx((at_beta["value_a"] - at_beta["value_b"]).to_numpy())
    assert ((table["ci_low"] <= table["difference"]) & (table["difference"] <= table["ci_high"])).all()
    assert (table["excludes_zero"] == ((table["ci_low"] > 0) | (table["ci_high"] < 0))).all()
    at_kl = table[table["comparison"] == "at_kl"]
    assert len(at_kl) == 2 * 3 and (at_kl["kl"] > 0).all()  # 2 temperatures x 3 matched KL values


def test_plots_of_two_seeds_have_distinct_labels_that_do_not_overlap(two_seeds):
    study, _ = two_seeds
    series = json.loads((study / "plots" / "series.json").read_text())
    for name, shown in series.items():
        for kind in ("legend", "rows", "labels"):
            assert len(set(shown[kind])) == len(shown[kind]), (name, kind, shown[kind])
        boxes = np.array(shown["label_boxes"]).reshape(-1, 4)
        for a, b in combinations(range(len(boxes)), 2):
            (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = boxes[a], boxes[b]
            assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0, (name, shown["labels"][a], shown["labels"][b])
    # one label per grid point and per SFT temperature, not per seed
    assert sorted(series["reward_vs_kl"]["labels"]) == sorted(
        [f"{v} β=0.1 T={t:g}" for v in GRID for t in (0.0, 1.0)] + [f"SFT T={t:g}" for t in (0.0, 1.0)]
    )
    assert series["raw_vs_lc_win_rate"]["rows"] == [f"{v} β=0.1" for v in GRID]
