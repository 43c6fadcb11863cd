"""The pairwise judge's requests (dpolab.pairwise_jobs): every policy against SFT at the same prompt
and temperature, and every policy against the dataset's chosen response where there is one."""

import pandas as pd

from dpolab.pairwise_jobs import judge_requests, judged_instructions

PROMPTS = pd.DataFrame(
    {"prompt_id": [0, 1], "prompt": ["<s>Q0", "<s>Q1"], "instruction": ["Q0", "Q1"], "chosen": ["good answer", "  "]}
)


def samples():
    rows = []
    for policy in ("sft", "variant~dpo/beta~0.1/seed~0"):
        for temperature in (0.0, 1.0):
            for prompt_id in (0, 1):
                rows.append(
                    {
                        "policy": policy,
                        "temperature": temperature,
                        "prompt_id": prompt_id,
                        "prompt": f"<s>Q{prompt_id}",
                        "completion": f"{policy[:3]}@{temperature:g}#{prompt_id}",
                    }
                )
    return pd.DataFrame(rows)


def test_requests_pair_each_policy_with_sft_and_with_the_chosen_response():
    requests = judge_requests(PROMPTS, samples())
    vs_sft = requests[requests["opponent"] == "sft"]
    # SFT is never judged against itself; the dpo policy once per prompt and temperature
    assert set(vs_sft["policy"]) == {"variant~dpo/beta~0.1/seed~0"} and len(vs_sft) == 4
    for _, row in vs_sft.iterrows():
        assert row["opponent_text"] == f"sft@{row['temperature']:g}#{row['prompt_id']}"
    vs_chosen = requests[requests["opponent"] == "chosen"]
    # prompt 1's chosen response is blank: no comparison; SFT is compared with the dataset too
    assert (
        set(vs_chosen["prompt_id"]) == {0}
        and len(vs_chosen) == 4
        and set(vs_chosen["opponent_text"]) == {"good answer"}
    )
    assert judged_instructions(PROMPTS, requests) == [f"Q{i}" for i in requests["prompt_id"]]


def test_without_chosen_responses_only_sft_is_the_opponent():
    requests = judge_requests(PROMPTS.drop(columns="chosen"), samples())
    assert set(requests["opponent"]) == {"sft"}
    assert judged_instructions(PROMPTS.drop(columns="instruction"), requests)[0].startswith("<s>")
