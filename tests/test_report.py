import json

import pandas as pd
import pytest

from dpolab.report import SUMMARY_COLUMNS, summary_table, write_plots


def _metrics(policy, variant, beta, seed, temperature, reward, kl, win, length):
    return {
        "policy": policy, "variant": variant, "loss": "" if variant == "sft" else variant, "beta": beta, "seed": seed,
        "temperature": temperature, "n": 10, "reward_mean": reward, "reward_ci_low": reward - 0.1,
        "reward_ci_high": reward + 0.1, "vader_mean": 0.1, "kl_mean": kl, "win_rate": win,
        "win_rate_ci_low": win - 0.1, "win_rate_ci_high": win + 0.1, "length_mean": length,
        "length_median": length, "chars_mean": 4 * length,
    }


@pytest.fixture
def metric_files(tmp_path):
    rows = [_metrics("sft", "sft", None, None, 1.0, 0.5, 0.0, 0.5, 20)]
    for variant in ("dpo", "ipo"):
        for beta, kl in ((0.1, 3.0), (0.5, 1.0)):
            rows.append(_metrics(f"variant~{variant}/beta~{beta:g}/seed~0", variant, beta, 0, 1.0, 0.5 + kl / 10, kl, 0.6, 22))
    files = []
    for i, row in enumerate(rows[::-1]):  # any order on disk
        path = tmp_path / f"m{i}.json"
        path.write_text(json.dumps(row))
        files.append(path)
    return files


def test_summary_orders_sft_first_and_keeps_columns(metric_files):
    table = summary_table(metric_files)
    assert list(table.columns[: len(SUMMARY_COLUMNS)]) == SUMMARY_COLUMNS
    assert table.iloc[0]["policy"] == "sft" and pd.isna(table.iloc[0]["beta"]) and pd.isna(table.iloc[0]["seed"])
    assert table["policy"].tolist()[1:] == [
        "variant~dpo/beta~0.1/seed~0", "variant~dpo/beta~0.5/seed~0", "variant~ipo/beta~0.1/seed~0", "variant~ipo/beta~0.5/seed~0"
    ]
    assert str(table["seed"].dtype) == "Int64"


def test_summary_refuses_incomplete_metrics(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"policy": "sft"}))
    with pytest.raises(ValueError, match="metrics files lack columns"):
        summary_table([path])


def test_plots_are_written(metric_files, tmp_path):
    paths = write_plots(summary_table(metric_files), tmp_path / "plots")
    assert sorted(p.name for p in paths) == ["length_vs_beta.png", "reward_vs_kl.png", "win_rate_vs_beta.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" and p.stat().st_size > 5000 for p in paths)
