"""Rule variants (dpolab.variants, workflow/rules/variants/): their config entries, the docs'
worked examples and the workflow's wiring. (The unpaired examples KTO learns from: test_unpaired.py;
the KTO and ORPO trainers: test_train.py.)"""

import copy
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from dpolab.config import ROOT, load_study
from dpolab.errors import ConfigError
from helpers.examples import PAIRS as SIX_PAIRS

SMOKE = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
PAIRS = SIX_PAIRS.head(4)


def _config(variants=None, grid=None):
    config = copy.deepcopy(SMOKE)
    config["variants"].update(variants or {})
    if grid:
        config["grid"]["variants"] = grid
    return config


# ---- config ---------------------------------------------------------------------------------
def test_rule_variants_join_the_grid_with_their_rule_and_start():
    study = load_study(_config(grid=["dpo", "kto", "orpo"]))
    points = {p.variant: p for p in study.points}
    assert (points["dpo"].rule, points["dpo"].loss, points["dpo"].skipped_sft) == ("dpo", "dpo", False)
    assert (points["kto"].rule, points["kto"].loss, points["kto"].skipped_sft) == ("kto", "kto", False)
    assert (points["orpo"].rule, points["orpo"].starts_from, points["orpo"].skipped_sft) == ("orpo", "base", True)
    assert (
        points["kto"].loss_params["desirable_weight"] == 1.0
        and points["kto"].loss_params["examples_per_pair"] == "both"
    )
    assert study.registry_variants == ["dpo"] and study.variant_rules == {"kto": ["kto"], "orpo": ["orpo"]}
    assert study.config["variants"]["orpo"]["starts_from"] == "base"  # made explicit in the resolved config


def test_a_users_rule_variant_passes_its_settings_through():
    study = load_study(
        _config({"mine": {"rule": "mine", "temperature": 0.7, "train": {"max_steps": 3}}}, ["dpo", "mine"])
    )
    point = next(p for p in study.points if p.variant == "mine")
    assert point.loss_params["temperature"] == 0.7 and point.loss_params["train"] == {"max_steps": 3}
    assert point.starts_from == "sft"
    assert study.train_settings("mine").max_steps == 3 and study.train_settings("dpo") == study.dpo  # train: overrides


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"loss": "dpo", "rule": "kto"}, "variants.bad: give exactly one of `loss`"),
        ({"beta_ish": 1}, "variants.bad: give exactly one of `loss`"),
        ({"rule": "kto", "desirable_weight": 0}, "variants.bad.desirable_weight: must be a positive number"),
        ({"rule": "kto", "desireable_weight": 2.0}, "variants.bad.desireable_weight: rule 'kto' takes no parameter"),
        ({"rule": "kto", "examples_per_pair": "two"}, "variants.bad.examples_per_pair: must be 'both' or 'one'"),
        (
            {"rule": "kto", "unpaired_data": "/nowhere/feedback.parquet"},
            "variants.bad.unpaired_data: '/nowhere/feedback.parquet' is not a file",
        ),
        (
            {"rule": "orpo", "starts_from": "scratch"},
            "variants.bad.starts_from: 'scratch' is not one of ['sft', 'base']",
        ),
        ({"rule": "orpo", "train": {"max_step": 3}}, "variants.bad.train.max_step: not a key of the dpo: section"),
        (
            {"rule": "orpo", "train": {"learning_rate": -1}},
            "variants.bad.train.learning_rate: -1 is less than or equal to the minimum",
        ),
        ({"rule": "summary"}, "variants.bad.rule: 'summary' is one of the workflow's own rules"),
        (
            {"loss": "dpo", "starts_from": "base"},
            "variants.bad.starts_from: a registry-loss variant trains the SFT model",
        ),
    ],
)
def test_bad_variant_entries_name_the_key(entry, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_study(_config({"bad": entry}, ["dpo", "bad"]))


def test_unpaired_file_is_checked_when_the_config_is_read(tmp_path):
    bad = tmp_path / "feedback.jsonl"
    bad.write_text(json.dumps({"prompt": "a", "response": "b", "label": True}) + "\n")
    with pytest.raises(
        ConfigError, match=r"variants\.bad\.unpaired_data: .*feedback\.jsonl: lacks column\(s\) completion"
    ):
        load_study(_config({"bad": {"rule": "kto", "unpaired_data": str(bad)}}, ["bad"]))
    good = tmp_path / "feedback.parquet"
    pd.DataFrame({"prompt": ["a", "b"], "completion": ["x", "y"], "label": [True, False]}).to_parquet(good)
    study = load_study(_config({"kto": {"rule": "kto", "unpaired_data": str(good)}}, ["kto"]))
    assert study.points[0].loss_params["unpaired_data"] == str(good)
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"prompt": ["a", "b"], "completion": ["x", "y"], "label": ["yes", "no"]}).to_csv(labels, index=False)
    with pytest.raises(
        ConfigError, match=r"variants\.kto\.unpaired_data: .*labels\.csv: column label must be boolean .*'yes' in row 0"
    ):
        load_study(_config({"kto": {"rule": "kto", "unpaired_data": str(labels)}}, ["kto"]))
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet at all")
    with pytest.raises(ConfigError, match=r"variants\.kto\.unpaired_data: cannot read .*garbage\.parquet as parquet"):
        load_study(_config({"kto": {"rule": "kto", "unpaired_data": str(garbage)}}, ["kto"]))


# ---- the docs' worked examples (docs/variants.md) and the workflow's wiring ---------------------------------
def test_readme_loss_example_registers_pins_and_joins_a_grid():
    """Path 1 of "Adding a variant", as written in docs/variants.md: the function (with its registry
    entry), its fixed-number test and its config entry."""
    from dpolab import losses
    from helpers.workflow import readme_blocks

    (function,) = readme_blocks("# src/dpolab/losses.py")
    (pin,) = readme_blocks("# tests/unit/test_losses.py")
    (entry,) = [yaml.safe_load(b) for b in readme_blocks("# configs/my_study.yaml") if "apo_zero" in b]
    try:
        exec(function, vars(losses))  # as if appended to losses.py
        namespace = {"losses": losses, "torch": torch, "pytest": pytest}
        exec(pin, namespace)
        namespace["test_apo_zero_on_fixed_numbers"]()
        study = load_study(_config(entry["variants"], entry["grid"]["variants"]))
        point = next(p for p in study.points if p.variant == "apo_zero")
        assert (point.rule, point.loss) == ("dpo", "apo_zero")
    finally:
        losses.LOSSES.pop("apo_zero", None)
        vars(losses).pop("apo_zero", None)


def _dry_run(tmp_path, config: dict):
    import subprocess
    import sys

    from helpers.workflow import copy_workflow

    work = copy_workflow(tmp_path / "work")
    (work / "configs" / "test.yaml").write_text(yaml.safe_dump(config))
    snakemake = str(Path(sys.executable).parent / "snakemake")
    return subprocess.run(
        [snakemake, "-n", "--configfile", "configs/test.yaml"], cwd=work, capture_output=True, text=True, timeout=300
    ), work


def test_missing_rule_file_is_named_before_any_job(tmp_path):
    done, work = _dry_run(tmp_path, _config({"mine": {"rule": "mine"}}, ["dpo", "mine"]))
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert (
        "invalid config: variants.mine.rule: no rule file workflow/rules/variants/mine.smk "
        "(the folder holds rule files for kto, orpo)" in output
    )
    assert not (work / "results").exists()


def test_each_variant_is_trained_by_its_own_rule(tmp_path):
    done, _ = _dry_run(tmp_path, _config(grid=["dpo", "kto", "orpo"]))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", output.split("Job stats:")[1].split("total")[0], flags=re.M))
    assert (jobs["dpo"], jobs["kto"], jobs["kto_examples"], jobs["orpo"], jobs["reference"]) == (
        "1",
        "1",
        "1",
        "1",
        "1",
    )
    # ORPO starts from the base model, KTO from SFT
    orpo = output.split("rule orpo:")[1].split("\n\n")[0]
    kto = output.split("rule kto:")[1].split("\n\n")[0]
    assert "results/smoke/base/model" in orpo and "sft/model" not in orpo
    assert "results/smoke/sft/model" in kto and "unpaired/variant~kto/examples.parquet" in kto
