"""Parts of the summary stage's job (dpolab.summary_jobs) that need no finished study: the data card
with the trained judge's accuracy, the checkpoint files, the aggregation settings from the config."""

import copy
import json

import yaml

from dpolab.config import ROOT, load_study
from dpolab.summary_jobs import aggregate_settings, data_card, reward_label, write_checkpoint_curves
from helpers.examples import metrics_rows

SMOKE = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())


def smoke_study(**changes):
    config = copy.deepcopy(SMOKE)
    config.update(changes)
    return load_study(config, check_environment=False)


def test_data_card_gains_the_trained_judges_accuracy(tmp_path):
    (tmp_path / "card.json").write_text(json.dumps({"n_pairs": 32}))
    (tmp_path / "accuracy.json").write_text(json.dumps({"accuracy": 0.81}))
    study = smoke_study()
    assert data_card(study, tmp_path / "card.json", None) == {"n_pairs": 32}
    assert data_card(study, tmp_path / "card.json", tmp_path / "accuracy.json")["trained_judge"] == {
        "rule": "judge",
        "accuracy": 0.81,
    }
    assert reward_label(study) == "gold reward (P(positive))"


def test_settings_follow_the_config_and_the_grid_order():
    study = smoke_study(evaluation={"bootstrap_resamples": 123, "matched_kl_points": 5})
    settings = aggregate_settings(study)
    assert (settings.resamples, settings.matched_kl_points, settings.variants) == (123, 5, ("dpo", "kto", "orpo"))


def test_checkpoint_files_and_plot(tmp_path):
    study = smoke_study(
        dpo=dict(SMOKE["dpo"], max_steps=4),
        evaluation={"checkpoints": [1, 2]},
        grid=dict(SMOKE["grid"], variants=["dpo", "kto"]),
    )
    files = []
    for index, row in metrics_rows().iterrows():
        files.append(tmp_path / f"m{index}.json")
        files[-1].write_text(json.dumps({k: (None if v != v else v) for k, v in row.items()}))
    outputs = {
        "checkpoints": tmp_path / "checkpoints.csv",
        "checkpoints_by_seed": tmp_path / "by_seed.csv",
        "frontier": tmp_path / "plots" / "reward_vs_kl.png",
    }
    (tmp_path / "plots").mkdir()
    curves, plot = write_checkpoint_curves(study, files, outputs)
    assert outputs["checkpoints"].is_file() and outputs["checkpoints_by_seed"].is_file() and plot.is_file()
    assert sorted(curves.loc[curves["variant"] == "dpo", "step"].unique()) == [1, 2, 4]
