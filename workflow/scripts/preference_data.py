import mlflow
from transformers import AutoTokenizer

from dpolab import jobs
from dpolab.preference_data import build

study = jobs.study_of(snakemake)
with jobs.job(snakemake, "data", params={"data": study.section("data"), "sft": study.section("sft")}):
    tokenizer = AutoTokenizer.from_pretrained(snakemake.input.base)
    card = build(
        study.data,
        dict(snakemake.output.items()),
        tokenizer,
        sft_source=study.sft_source,
        sft_dataset=study.sft_data.dataset,
        reward_model=study.trains_reward_model,
    )
    mlflow.log_metrics(
        {
            "policy_pairs": card["policy_pairs"]["pairs"],
            "test_prompts": card["test_prompts"],
            **{k: v for k, v in card["counts"].items()},
        }
    )
    mlflow.log_artifact(snakemake.output.card)
