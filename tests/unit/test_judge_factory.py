"""dpolab.judge_factory: the judge a config entry `judges.<name>` describes. Pinned, with the
specs the config check resolves (configs/smoke.yaml, schema defaults filled in): a gold entry
loads the saved TF-IDF classifier, a vader entry is VADER, an llm_http entry is the HTTP pairwise
judge with the entry's settings (no request made) and the default template when the entry has
none; every judge carries its config name (the class's own name untouched); an in-study reward
model not given to the job and an unknown kind are refused naming the key; prompts_for gives a
chat-template judge the instructions and every other judge the prompts."""

import copy

import numpy as np
import pytest
import yaml

from dpolab.config import ROOT, load_study
from dpolab.http_judge import HTTPPairwiseJudge
from dpolab.judge_factory import make_judge, prompts_for
from dpolab.judges import GoldJudge, VaderJudge
from dpolab.settings import JudgeConfig

SMOKE = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
GOOD = ["a wonderful, great film", "great acting and a wonderful story", "a great and wonderful cast"]
BAD = ["a terrible, awful film", "awful acting and a terrible story", "an awful and terrible cast"]


def _specs(**judges) -> dict:
    config = copy.deepcopy(SMOKE)
    config["judges"] = {**config["judges"], **judges}
    return load_study(config, check_environment=False).section("judges")


@pytest.fixture(scope="module")
def gold_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gold")
    GoldJudge.fit(GOOD * 2 + BAD * 2, [1] * 6 + [0] * 6, JudgeConfig(max_features=100, ngram_max=1)).save(folder)
    return folder


def test_gold_entry_loads_the_saved_classifier(gold_dir):
    judge = make_judge("gold", _specs()["gold"], gold_dir=gold_dir)
    assert isinstance(judge, GoldJudge) and judge.name == "gold" and not judge.pairwise
    good, bad = judge.score([""] * 3, GOOD), judge.score([""] * 3, BAD)
    assert ((0 < good) & (good < 1)).all() and (good > bad).all()


def test_a_judge_carries_its_config_name(gold_dir):
    judge = make_judge("imdb_classifier", {"kind": "gold"}, gold_dir=gold_dir)
    assert judge.name == "imdb_classifier" and GoldJudge.name == "gold"


def test_vader_entry_is_vader_scoring_the_prompt_and_completion():
    judge = make_judge("vader", _specs()["vader"])
    assert isinstance(judge, VaderJudge) and judge.name == "vader"
    scores = judge.score(["This film was ", "This film was "], ["wonderful.", "awful."])
    assert -1 <= scores[1] < 0 < scores[0] <= 1


def test_llm_http_entry_is_the_http_judge_with_the_entrys_settings(tmp_path):
    spec = _specs(
        api={
            "kind": "llm_http",
            "base_url": "http://127.0.0.1:9/v1/",
            "model": "judge-model",
            "max_retries": 1,
            "timeout": 5,
        }
    )["api"]
    judge = make_judge(
        "api",
        spec,
        default_template="Which is better? {prompt} {first} {second}",
        verdict_cache=tmp_path / "verdicts.jsonl",
    )
    assert isinstance(judge, HTTPPairwiseJudge) and judge.pairwise and judge.name == "api"
    assert judge.base_url == "http://127.0.0.1:9/v1" and judge.model == "judge-model"
    assert (judge.max_retries, judge.timeout, judge.max_concurrency) == (1, 5.0, spec["max_concurrency"])
    assert judge.template == "Which is better? {prompt} {first} {second}"  # the entry gives none
    assert judge.cache_path == tmp_path / "verdicts.jsonl" and judge.requests_sent == 0


def test_an_entrys_own_template_wins_over_the_default():
    spec = _specs(
        api={
            "kind": "llm_http",
            "base_url": "http://127.0.0.1:9/v1",
            "model": "m",
            "template": "Q: {prompt}\n1: {first}\n2: {second}",
        }
    )["api"]
    judge = make_judge("api", spec, default_template="unused {prompt} {first} {second}")
    assert judge.template == "Q: {prompt}\n1: {first}\n2: {second}"


def test_an_in_study_reward_model_must_be_given_to_the_job():
    spec = {"kind": "reward_model", "source": "study", "max_length": 64}
    with pytest.raises(ValueError, match=r"^judges\.rm: the reward model trained in the study was not given"):
        make_judge("rm", spec)


def test_an_unknown_kind_is_refused_naming_the_key():
    with pytest.raises(ValueError, match=r"^judges\.x\.kind: unknown judge kind 'oracle'"):
        make_judge("x", {"kind": "oracle"})


def test_prompts_for_gives_a_chat_template_judge_the_instructions():
    prompts, instructions = ["<|user|>Hi<|assistant|>"], ["Hi"]
    assert prompts_for({"chat_template": True}, prompts, instructions) == instructions
    assert prompts_for({"chat_template": False}, prompts, instructions) == prompts
    assert prompts_for({}, prompts, instructions) == prompts
    assert prompts_for({"chat_template": True}, prompts, None) == prompts  # the IMDb miniature: no instructions


def test_judges_of_the_smoke_config_score_arrays_of_one_score_per_completion(gold_dir):
    specs = _specs()
    for name in ("gold", "vader"):
        judge = make_judge(name, specs[name], gold_dir=gold_dir)
        scores = judge.score(prompts_for(specs[name], ["", ""], None), GOOD[:2])
        assert isinstance(scores, np.ndarray) and scores.shape == (2,) and scores.dtype == np.float64
