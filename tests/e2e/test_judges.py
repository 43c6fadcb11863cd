"""The pairwise LLM judge (dpolab.judges.LLMPairwiseJudge) on a real vLLM engine of the tiny
model: both orders, greedy verdicts, and the first-slot share of an identical pair. (The judges
without an engine: tests/unit/test_judges.py.)"""

import pandas as pd
import pytest

from dpolab.judges import LLMPairwiseJudge, combine_orders, position_bias
from helpers.examples import BAD, GOOD, JUDGE_PROMPTS


@pytest.fixture(scope="module")
def llm_judge(vllm_model_dir, tmp_path_factory):
    return LLMPairwiseJudge("llm", str(vllm_model_dir), max_model_len=256, cache_dir=tmp_path_factory.mktemp("vllm"))


def test_llm_judge_judges_both_orders(llm_judge):
    table = llm_judge.compare(JUDGE_PROMPTS, GOOD, BAD)
    assert list(table.columns) == ["preference", "verdict_in_order", "verdict_swapped"]
    verdicts = set(table["verdict_in_order"]) | set(table["verdict_swapped"])
    assert verdicts <= {"first", "second", "tie"}
    assert table["preference"].tolist() == combine_orders(table["verdict_in_order"], table["verdict_swapped"]).tolist()
    # the swapped order is a separate judgment of the same pair: judge it alone and compare
    assert llm_judge.verdicts(JUDGE_PROMPTS, BAD, GOOD) == table["verdict_swapped"].tolist()
    assert llm_judge.compare(JUDGE_PROMPTS, GOOD, BAD).equals(table)  # greedy: deterministic
    bias = position_bias(pd.concat([table["verdict_in_order"], table["verdict_swapped"]]))
    assert bias["verdicts"] == 2 * len(JUDGE_PROMPTS) and 0.0 <= bias["tie_share"] <= 1.0


def test_llm_judge_first_slot_share_of_an_identical_pair(llm_judge):
    """With the same response in both slots any decided verdict is pure position bias."""
    verdicts = llm_judge.verdicts(JUDGE_PROMPTS, GOOD, GOOD)
    bias = position_bias(verdicts)
    decided = [v for v in verdicts if v != "tie"]
    if decided:
        assert bias["first_slot_share"] == sum(v == "first" for v in decided) / len(decided)
