"""The evaluate stage's job (dpolab.evaluate_jobs): a policy's identity in its metrics, and one
job's scoring of every temperature's samples by the study's pointwise judges."""

import copy
import json

import pandas as pd
import pytest
import yaml

from dpolab.config import ROOT, load_study
from dpolab.evaluate_jobs import evaluate_one, policy_identity
from dpolab.judges import GoldJudge, JudgeConfig

SMOKE = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())


def smoke(**evaluation):
    config = copy.deepcopy(SMOKE)
    config.setdefault("evaluation", {}).update(evaluation)
    config["judges"] = {"gold": {"kind": "gold"}, "vader": {"kind": "vader"}, "positive": {"kind": "gold"}}
    return load_study(config, check_environment=False)


def test_identity_names_the_grid_point_and_its_training_step():
    study = smoke(checkpoints=[1])
    assert policy_identity(study, "sft") == (
        {"variant": "sft", "loss": "", "beta": None, "seed": None, "step": 0},
        False,
    )
    assert policy_identity(study, "variant~dpo/beta~0.1/seed~0") == (
        {"variant": "dpo", "loss": "dpo", "beta": 0.1, "seed": 0, "step": 2},
        False,
    )
    assert policy_identity(study, "variant~orpo/beta~0.1/seed~0/step~1")[0]["step"] == 1
    assert policy_identity(study, "variant~orpo/beta~0.1/seed~0/step~1")[1] is True  # ORPO starts from the base model


def test_one_job_scores_every_temperature_with_every_pointwise_judge(tmp_path):
    study = smoke()
    texts = ["a wonderful film, loved it", "great acting", "awful and boring", "a terrible mess"] * 5
    GoldJudge.fit(texts, [1, 1, 0, 0] * 5, JudgeConfig(max_features=100, ngram_max=1)).save(tmp_path / "gold")
    pd.DataFrame({"prompt_id": [0, 1], "prompt": ["The film", "This movie"]}).to_parquet(tmp_path / "prompts.parquet")
    samples, metrics, scored = [], [], []
    for temperature in study.temperature_labels:
        path = tmp_path / f"samples_{temperature}.jsonl"
        records = [
            {
                "prompt_id": i,
                "prompt": p,
                "completion": c,
                "prompt_token_ids": [1, 2],
                "completion_token_ids": ids,
                "policy_logps": -1.0,
                "reference_logps": -1.5,
            }
            for i, (p, c, ids) in enumerate(
                [("The film", " was wonderful", [3, 4, 5]), ("This movie", " was awful", [6, 7])]
            )
        ]
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        samples.append(path)
        metrics.append(tmp_path / f"metrics_{temperature}.json")
        scored.append(tmp_path / f"scored_{temperature}.parquet")
    found = evaluate_one(
        study,
        "variant~dpo/beta~0.1/seed~0",
        prompts_file=tmp_path / "prompts.parquet",
        samples_files=samples,
        metrics_files=metrics,
        scored_files=scored,
        gold_dir=tmp_path / "gold",
        log=False,
    )
    assert [m["temperature"] for m in found] == [float(t) for t in study.temperatures]
    assert json.loads(metrics[0].read_text()) == found[0]
    first = found[0]
    assert first["kl_mean"] == pytest.approx(0.5) and first["length_mean"] == pytest.approx(2.5) and first["step"] == 2
    table = pd.read_parquet(scored[0])
    # the judge named positive is of kind gold: the same scores as the study's gold classifier
    assert (table["score_positive"] == table["gold_score"]).all() and (table["score_gold"] == table["gold_score"]).all()
    assert (table["reward_score"] == table["gold_score"]).all() and table.loc[0, "gold_score"] > table.loc[
        1, "gold_score"
    ]
    assert table["policy"].eq("variant~dpo/beta~0.1/seed~0").all() and "completion_token_ids" not in table
