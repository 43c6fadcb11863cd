"""The judges (dpolab.judges): a reward model built here, the gold classifier and VADER, the judge
config's errors, and the LLM judge's label check. (The LLM judge on a real vLLM engine:
tests/e2e/test_judges.py.)"""

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from dpolab.config import ROOT, load_study, read_study
from dpolab.errors import ConfigError
from dpolab.judge_factory import make_judge
from dpolab.judges import (
    GoldJudge,
    JudgeConfig,
    LLMPairwiseJudge,
    RewardModelJudge,
    VaderJudge,
    preference_from_scores,
)
from helpers.examples import BAD, GOOD, JUDGE_PROMPTS


@pytest.fixture(scope="module")
def reward_model_dir(tiny_model_dir, tmp_path_factory):
    from transformers import AutoConfig, AutoTokenizer, LlamaForSequenceClassification

    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.num_labels = 1
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config)
    out = tmp_path_factory.mktemp("rm") / "reward_model"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


def test_reward_model_scores_are_the_heads_logit_whatever_the_batch(reward_model_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    judge = RewardModelJudge("rm", str(reward_model_dir), batch_size=3)
    scores = judge.score(JUDGE_PROMPTS, GOOD)
    model = AutoModelForSequenceClassification.from_pretrained(reward_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(reward_model_dir)
    with torch.no_grad():  # one text at a time: no padding at all
        expected = [
            model(**tokenizer(p + c, return_tensors="pt")).logits[0, 0].item() for p, c in zip(JUDGE_PROMPTS, GOOD)
        ]
    assert scores.tolist() == pytest.approx(expected, abs=1e-4)
    assert len(set(np.round(scores, 6))) == len(scores)  # a real head, not a constant
    table = judge.compare(JUDGE_PROMPTS, GOOD, BAD)
    assert table["preference"].tolist() == np.where(scores > judge.score(JUDGE_PROMPTS, BAD), 1.0, 0.0).tolist()


def test_reward_model_judge_from_config(reward_model_dir):
    study = read_study(
        ROOT / "configs" / "smoke.yaml",
        {
            "judges": {"rm": {"kind": "reward_model", "path": str(reward_model_dir)}},
            "evaluation": {"primary_judge": "rm"},
        },
    )
    judge = make_judge("rm", study.section("judges")["rm"])
    assert judge.name == "rm" and not judge.pairwise and judge.score(JUDGE_PROMPTS[:1], GOOD[:1]).shape == (1,)


@pytest.mark.parametrize(
    "judges, message",
    [
        ({"rm": {"kind": "reward_model"}}, r"judges.rm.path: required"),
        (
            {"rm": {"kind": "reward_model", "path": "/no/such/folder"}},
            r"judges.rm.path: '/no/such/folder' is not a folder",
        ),
        ({"rm": {"kind": "reward_model", "source": "base"}}, r"judges.rm.source: a reward model needs"),
        (
            {"llm": {"kind": "llm_pairwise", "source": "base", "template": "{prompt} {first}"}},
            r"judges.llm.template: .*missing \['second'\]",
        ),
        (
            {"llm": {"kind": "llm_pairwise", "source": "base", "labels": {"first": "1", "second": "1"}}},
            r"judges.llm.labels: first, second and tie must differ",
        ),
        ({"x": {"kind": "oracle"}}, r"judges.x.kind: 'oracle' is not one of"),
    ],
)
def test_judge_config_errors_name_the_key(judges, message):
    with pytest.raises(ConfigError, match=message):
        read_study(ROOT / "configs" / "smoke.yaml", {"judges": {"gold": {"kind": "gold"}, **judges}})


def test_primary_judge_must_exist():
    with pytest.raises(ConfigError, match=r"evaluation.primary_judge: 'rm' is not a judge"):
        read_study(ROOT / "configs" / "smoke.yaml", {"evaluation": {"primary_judge": "rm"}})


def test_vader_compares_by_scores():
    table = VaderJudge().compare(JUDGE_PROMPTS, GOOD, BAD)
    assert table["preference"].tolist() == [1.0, 1.0, 1.0, 1.0]


def test_llm_judge_labels_must_be_single_tokens(vllm_model_dir, tmp_path):
    with pytest.raises(ValueError, match=r"judges.bad.labels.first: 'first one' is 2 tokens"):
        LLMPairwiseJudge(
            "bad", str(vllm_model_dir), labels={"first": "first one"}, max_model_len=256, cache_dir=tmp_path
        )


def test_a_study_needs_a_pointwise_judge():
    with pytest.raises(ConfigError, match=r"judges: add at least one pointwise judge"):
        config = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())  # judges replaced, not merged
        load_study(
            {
                **config,
                "judges": {"llm": {"kind": "llm_pairwise", "source": "base"}},
                "evaluation": {"primary_judge": "llm"},
            }
        )


def test_preferences_from_scores_count_ties_half():
    assert preference_from_scores([0.9, 0.5, 0.1, 0.3], [0.1, 0.5, 0.9, 0.3]).tolist() == [1.0, 0.5, 0.0, 0.5]


def test_gold_judge_round_trips_without_pickle(tmp_path):
    texts = ["great wonderful film", "awful boring mess", "wonderful acting great", "boring awful plot"] * 10
    labels = [1, 0, 1, 0] * 10
    judge = GoldJudge.fit(texts, labels, JudgeConfig(max_features=100, ngram_max=1))
    judge.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["judge.json", "vocabulary.json", "weights.npz"]
    loaded = GoldJudge.load(tmp_path)
    probe = ["a great film", "an awful film", "nothing known here"]
    assert np.allclose(judge.score_texts(probe), loaded.score_texts(probe))
    assert loaded.score_texts(["great"])[0] > 0.5 > loaded.score_texts(["awful"])[0]
    assert judge.accuracy(texts, labels) == 1.0


def test_vader_is_signed():
    scores = VaderJudge().score_texts(["I loved it, wonderful!", "Terrible, I hated it."])
    assert scores[0] > 0 > scores[1]


def test_the_judge_job_trains_on_the_train_split_and_copies_its_accuracy(tmp_path):
    from dpolab.judges import make_gold_judge

    texts = ["great wonderful film", "awful boring mess", "wonderful acting great", "boring awful plot"] * 10
    reviews = pd.DataFrame({"text": texts, "label": [1, 0, 1, 0] * 10, "split": ["train"] * 24 + ["eval"] * 16})
    reviews.to_parquet(tmp_path / "reviews.parquet")
    metrics = make_gold_judge(
        tmp_path / "reviews.parquet",
        JudgeConfig(max_features=100, ngram_max=1),
        tmp_path / "judge",
        tmp_path / "accuracy.json",
        log=False,
    )
    assert (tmp_path / "accuracy.json").read_text() == (tmp_path / "judge" / "accuracy.json").read_text()
    assert GoldJudge.load(tmp_path / "judge").score_texts(["great"])[0] > 0.5
    assert all(isinstance(v, float) for k, v in metrics.items() if "accuracy" in k)
