"""evaluation.checkpoints: policies saved at training steps (dpolab.train.StepSnapshots), served to
the generate and evaluate rules as policies of their own, and drawn as curves over training
(dpolab.aggregate.checkpoint_curves, dpolab.plots, dpolab.tracking.curve_metrics)."""

import copy
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from dpolab.aggregate import checkpoint_curves
from dpolab.config import ROOT, load_study
from dpolab.errors import ConfigError
from dpolab.models import load_policy
from dpolab.plots import write_checkpoint_plot
from dpolab.study import parse_policy
from dpolab.tracking import curve_metrics
from dpolab.train import DPOSettings, compute_reference_logps, run_dpo

SMOKE = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())


def smoke_with(**evaluation):
    config = copy.deepcopy(SMOKE)
    config.setdefault("evaluation", {}).update(evaluation)
    return config


def test_checkpoint_policies_are_the_checkpointed_grid_points_at_each_step():
    config = smoke_with(checkpoints=[1])
    config["dpo"]["max_steps"] = 3
    config["variants"]["mine"] = {"rule": "mine"}  # a user's rule file saves no checkpoints
    config["grid"]["variants"] = ["dpo", "kto", "orpo", "mine"]
    study = load_study(config, check_environment=False)
    assert study.checkpoint_policies == [f"variant~{v}/beta~0.1/seed~0/step~1" for v in ("dpo", "kto", "orpo")]
    assert study.evaluated_policies == study.policies + study.checkpoint_policies
    parts = parse_policy("variant~dpo/beta~0.1/seed~0/step~1")
    assert parts == {"variant": "dpo", "beta": "0.1", "seed": "0", "step": "1"}
    assert study.point(**parts) == study.point("dpo", 0.1, 0)
    with pytest.raises(KeyError, match="step 2 is not in evaluation.checkpoints"):
        study.point("dpo", 0.1, 0, step=2)
    assert study.trained_steps("dpo") == 3
    assert load_study(SMOKE, check_environment=False).checkpoint_policies == []


@pytest.mark.parametrize("steps, train, message", [
    ([2], None, r"evaluation.checkpoints: step 2 is not before the end of variant dpo's training \(dpo.max_steps: 2\)"),
    ([1], {"max_steps": 1}, r"step 1 is not before the end of variant kto's training \(variants.kto.train.max_steps: 1\)"),
])
def test_a_step_at_or_after_the_end_of_training_is_refused_naming_the_key(steps, train, message):
    config = smoke_with(checkpoints=steps)
    if train:
        config["variants"]["kto"]["train"] = train
    with pytest.raises(ConfigError, match=message):
        load_study(config, check_environment=False)


@pytest.mark.parametrize("steps", [[0], [1, 1], "1"])
def test_bad_checkpoint_lists_are_refused_by_the_schema(steps):
    with pytest.raises(ConfigError, match="evaluation.checkpoints"):
        load_study(smoke_with(checkpoints=steps), check_environment=False)


PAIRS = pd.DataFrame({
    "pair_id": range(4),
    "prompt": ["This movie was", "I saw it", "The plot", "Acting is"],
    "chosen": [" great fun", " and loved it", " is brilliant", " superb here"],
    "rejected": [" awful", " and hated every minute", " is dull", " bad"],
})


def test_training_saves_the_policy_at_each_checkpoint_step(tiny_model_dir, tmp_path):
    cfg = DPOSettings(max_steps=3, batch_size=2, gradient_accumulation_steps=1, learning_rate=1e-2,
                      warmup_steps=0, max_length=32, logging_steps=1)
    reference = compute_reference_logps(tiny_model_dir, PAIRS, cfg, tmp_path / "ref", use_cpu=True)
    out = tmp_path / "policy"
    run_dpo(tiny_model_dir, PAIRS, reference, {"max_length": 32}, cfg, loss_name="dpo", loss_params={}, beta=0.1,
            seed=0, out_dir=out, use_cpu=True, mlflow_active=False, checkpoints=(1, 2))
    assert sorted(p.name for p in out.glob("step~*")) == ["step~1", "step~2"]
    weights = {}
    for name in ("step~1/model", "step~2/model", "model"):
        folder = out / name
        assert (folder / "model.safetensors").is_file() and (folder / "training_args.json").is_file()
        assert not list(folder.glob("*.bin")) and not list(folder.glob("*.pt"))  # no pickle
        model, _ = load_policy(folder)
        weights[name] = model.model.embed_tokens.weight.detach().clone()
    # three different policies: the checkpoints are the weights at their steps, not copies of the end
    assert not np.allclose(weights["step~1/model"], weights["step~2/model"])
    assert not np.allclose(weights["step~2/model"], weights["model"])


def metrics_rows():
    """Evaluate's metrics.json rows of a two-seed study with checkpoints at steps 1 and 2 of 4."""
    rows = []
    for temperature in (0.0, 1.0):
        rows.append({"policy": "sft", "variant": "sft", "loss": "", "beta": None, "seed": None, "step": 0,
                     "temperature": temperature, "kl_mean": 0.0, "reward_mean": 0.4, "length_mean": 10.0})
        for variant, slope in (("dpo", 0.05), ("kto", 0.02)):
            for seed in (0, 1):
                for step in (1, 2, 4):
                    rows.append({"policy": f"variant~{variant}/beta~0.1/seed~{seed}" + (f"/step~{step}" if step < 4 else ""),
                                 "variant": variant, "loss": variant, "beta": 0.1, "seed": seed, "step": step,
                                 "temperature": temperature, "kl_mean": step * (1 + seed), "reward_mean": 0.4 + slope * step + 0.01 * seed,
                                 "length_mean": 10.0 + step, "reward_ci_low": 0.3, "reward_ci_high": 0.6})
    return pd.DataFrame(rows)


def test_curves_average_seeds_at_each_step_and_start_at_sft():
    by_seed, curves = checkpoint_curves(metrics_rows())
    assert len(by_seed) == 2 + 2 * 2 * 2 * 3
    dpo = curves[(curves["variant"] == "dpo") & (curves["temperature"] == 1.0)].set_index("step")
    assert list(dpo.index) == [1, 2, 4] and (dpo["seeds"] == 2).all()
    assert dpo.loc[2, "kl_mean"] == pytest.approx((2 * 1 + 2 * 2) / 2)
    assert dpo.loc[4, "reward_mean"] == pytest.approx(0.4 + 0.05 * 4 + 0.005)
    assert dpo.loc[4, "kl_seed_sd"] == pytest.approx(np.std([4, 8], ddof=1))
    sft = curves[curves["variant"] == "sft"]
    assert list(sft["step"]) == [0, 0] and sft["beta"].isna().all() and (sft["seeds"] == 1).all()


def test_rows_without_a_step_are_sft_at_0_or_the_last_step_else_refused():
    rows = metrics_rows()
    steps = rows.pop("step")
    _, curves = checkpoint_curves(rows.assign(step=steps.where(rows["policy"].str.contains("/step~"))), {"dpo": 4, "kto": 4})
    assert sorted(curves["step"].unique()) == [0, 1, 2, 4]
    with pytest.raises(ValueError, match=r"the step of variant~dpo/beta~0.1/seed~0 \(metrics.json written by an older"):
        checkpoint_curves(rows.assign(step=steps.where(rows["policy"].str.contains("/step~"))), {"kto": 4})


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
