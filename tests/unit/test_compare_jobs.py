"""The compare stage's job (dpolab.compare_jobs): every judge's verdicts in one table, pointwise
judges from their scores and pairwise judges from their verdict files, in config order."""

import copy

import numpy as np
import pandas as pd
import yaml

from dpolab.compare_jobs import all_judgments
from dpolab.config import ROOT, load_study
from helpers.examples import COMPARE_PROMPTS, scored_samples

SMOKE = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())


def test_judgments_of_pointwise_and_pairwise_judges_in_one_table(tmp_path):
    config = copy.deepcopy(SMOKE)
    config["judges"] = {"gold": {"kind": "gold"}, "llm": {"kind": "llm_pairwise", "source": "base"}}
    study = load_study(config, check_environment=False)
    scored = scored_samples(np.random.default_rng(4))
    policy = "variant~a/beta~0.1/seed~0"
    verdicts = pd.DataFrame(
        {
            "policy": policy,
            "temperature": 1.0,
            "prompt_id": np.arange(COMPARE_PROMPTS),
            "opponent": "sft",
            "verdict_in_order": "first",
            "verdict_swapped": "second",
            "preference": 1.0,
        }
    )
    verdicts.to_parquet(tmp_path / "llm.parquet")
    prompts = pd.DataFrame(
        {"prompt_id": np.arange(COMPARE_PROMPTS), "prompt": [f"p{i}" for i in range(COMPARE_PROMPTS)]}
    )  # IMDb: no chosen
    table = all_judgments(study, scored, prompts, [tmp_path / "llm.parquet"])
    assert list(dict.fromkeys(table["judge"])) == ["gold", "llm"]
    assert set(table["opponent"]) == {"sft"}  # no dataset responses to compare with
    gold = table[table["judge"] == "gold"]
    assert len(gold) == 2 * 2 * COMPARE_PROMPTS and len(table[table["judge"] == "llm"]) == COMPARE_PROMPTS
    assert table.loc[table["judge"] == "llm", "length_diff"].notna().all()
