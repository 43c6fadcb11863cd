import json

import numpy as np
import pandas as pd
import pytest

from dpolab.report import SUMMARY_COLUMNS, summary_html, summary_table

TEMPERATURES = (0.0, 1.0)
JUDGES = ("gold", "vader")


def _metrics(policy, variant, beta, seed, temperature, reward, kl, length):
    return {
        "policy": policy,
        "variant": variant,
        "loss": "" if variant == "sft" else variant,
        "beta": beta,
        "seed": seed,
        "temperature": temperature,
        "n": 10,
        "reward_mean": reward,
        "reward_ci_low": reward - 0.1,
        "reward_ci_high": reward + 0.1,
        "vader_mean": 0.1,
        "kl_mean": kl,
        "length_mean": length,
        "length_median": length,
        "chars_mean": 4 * length,
    }


def _policies():
    rows = [("sft", "sft", None, None, 0.0)]
    for variant in ("dpo", "ipo"):
        for beta, kl in ((0.1, 3.0), (0.5, 1.0)):
            rows.append((f"variant~{variant}/beta~{beta:g}/seed~0", variant, beta, 0, kl))
    return rows


@pytest.fixture
def metric_files(tmp_path):
    files = []
    for policy, variant, beta, seed, kl in _policies()[::-1]:  # any order on disk
        for temperature in TEMPERATURES:
            length = 20 if variant == "sft" else 20 + 10 * kl
            path = tmp_path / f"m{len(files)}.json"
            path.write_text(json.dumps(_metrics(policy, variant, beta, seed, temperature, 0.5 + kl / 10, kl, length)))
            files.append(path)
    return files


@pytest.fixture
def win_rates():
    rows = []
    for policy, variant, *_ in _policies():
        for temperature in TEMPERATURES:
            for judge in JUDGES:
                win = 0.5 if variant == "sft" else 0.7
                rows.append(
                    {
                        "judge": judge,
                        "policy": policy,
                        "temperature": temperature,
                        "win_rate": win,
                        "win_rate_ci_low": win - 0.1,
                        "win_rate_ci_high": win + 0.1,
                        "lc_win_rate": win - 0.1,
                        "lc_win_rate_ci_low": win - 0.2,
                        "lc_win_rate_ci_high": win,
                    }
                )
    return pd.DataFrame(rows)


def test_summary_has_a_row_per_policy_temperature_and_judge(metric_files, win_rates):
    table = summary_table(metric_files, win_rates)
    assert list(table.columns[: len(SUMMARY_COLUMNS)]) == SUMMARY_COLUMNS
    assert len(table) == 5 * len(TEMPERATURES) * len(JUDGES)
    assert table.iloc[0]["policy"] == "sft" and pd.isna(table.iloc[0]["beta"]) and pd.isna(table.iloc[0]["seed"])
    assert table["policy"].drop_duplicates().tolist()[1:] == [
        "variant~dpo/beta~0.1/seed~0",
        "variant~dpo/beta~0.5/seed~0",
        "variant~ipo/beta~0.1/seed~0",
        "variant~ipo/beta~0.5/seed~0",
    ]
    assert str(table["seed"].dtype) == "Int64"
    dpo = table[(table["policy"] == "variant~dpo/beta~0.1/seed~0") & (table["temperature"] == 1.0)]
    assert dpo["length_ratio_vs_sft"].tolist() == [2.5, 2.5]  # 50 tokens against SFT's 20, for each judge
    assert dpo["chars_ratio_vs_sft"].tolist() == [2.5, 2.5]
    assert table["first_slot_share"].isna().all()  # no pairwise judge: the column is there, empty


def test_summary_marks_policies_that_skipped_sft(metric_files, win_rates):
    policies = sorted({json.loads(f.read_text())["policy"] for f in metric_files})
    skipped = {p: p.startswith("variant~ipo") for p in policies}
    table = summary_table(metric_files, win_rates, skipped)
    assert table["skipped_sft"].dtype == bool
    assert (table["skipped_sft"] == table["variant"].eq("ipo")).all()
    assert summary_table(metric_files, win_rates)["skipped_sft"].isna().all()  # not given: the column is there, empty
    with pytest.raises(ValueError, match="skipped_sft: no entry for policies"):
        summary_table(metric_files, win_rates, {"sft": False})


def test_summary_refuses_incomplete_inputs(tmp_path, metric_files, win_rates):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"policy": "sft"}))
    with pytest.raises(ValueError, match="metrics files lack columns"):
        summary_table([path], win_rates)
    with pytest.raises(ValueError, match="no win rates for policies"):
        summary_table(metric_files, win_rates[win_rates["policy"] != "sft"])
    # one judge's temperature off in its last digit (a JSON float read imprecisely): refused, not dropped
    shifted = win_rates.copy()
    first_judge = shifted["judge"].iloc[0]
    rows = shifted["judge"] == first_judge
    shifted.loc[rows, "temperature"] = np.nextafter(shifted.loc[rows, "temperature"].to_numpy(), 2.0)
    with pytest.raises(ValueError, match=f"win rates of judge {first_judge} .* match no evaluated policy"):
        summary_table(metric_files, shifted)


def test_summary_html_has_a_section_per_judge_and_every_row(metric_files, win_rates):
    from html.parser import HTMLParser

    table = summary_table(metric_files, win_rates)
    page = summary_html(table, "study x")

    class Cells(HTMLParser):
        rows, sections = 0, []

        def handle_starttag(self, tag, attrs):
            self.rows += tag == "tr"

        def handle_data(self, data):
            if data.startswith("judge: "):
                self.sections.append(data.removeprefix("judge: "))

    parser = Cells()
    parser.feed(page)
    assert parser.sections == list(JUDGES)
    assert parser.rows == len(table) + len(JUDGES)  # each section: a header row and its rows
    assert "variant~dpo/beta~0.1/seed~0" in page and "first_slot_share" not in page  # empty columns are left out
    assert f"{table['reward_mean'].iloc[0]:.3f}" in page and "NA" not in page
