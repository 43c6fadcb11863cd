from pathlib import Path

import mlflow
import pandas as pd

from dpolab import jobs
from dpolab.compare import BASELINE, CHOSEN, dataset_responses
from dpolab.generate import read_samples
from dpolab.http_judge import ALPACA_PAIRWISE_TEMPLATE, JudgeUnavailable
from dpolab.judge_factory import make_judge
from dpolab.judges import position_bias

study, judge_name = jobs.study_of(snakemake), snakemake.wildcards.judge
spec = study.section("judges")[judge_name]
with jobs.job(snakemake, "pairwise_judge", params={"judge": {judge_name: spec}}, tags={"judge": judge_name}):
    prompts = pd.read_parquet(snakemake.input.prompts)
    chosen = dataset_responses(prompts)
    # what the judge reads as the prompt: the instruction as a person wrote it (a preference study's
    # prompts as the policy reads them carry its chat template)
    instruction = prompts.set_index("prompt_id")["instruction" if "instruction" in prompts else "prompt"]
    frames = [read_samples(f).assign(policy=p, temperature=float(t))
              for (p, t), f in zip(snakemake.params.policy_temperatures, snakemake.input.samples, strict=True)]
    samples = pd.concat(frames, ignore_index=True)[["policy", "temperature", "prompt_id", "prompt", "completion"]]
    sft = samples[samples["policy"] == BASELINE].rename(columns={"completion": "opponent_text"})
    # every policy against SFT (same prompt, same temperature), and every policy against the chosen response
    vs_sft = samples[samples["policy"] != BASELINE].merge(sft[["temperature", "prompt_id", "opponent_text"]],
                                                           on=["temperature", "prompt_id"], validate="many_to_one")
    vs_chosen = samples[samples["prompt_id"].isin(chosen.index)].assign(opponent_text=lambda f: chosen.loc[f["prompt_id"]].to_numpy())
    requests = pd.concat([vs_sft.assign(opponent=BASELINE), vs_chosen.assign(opponent=CHOSEN)], ignore_index=True)
    judge = make_judge(judge_name, spec, base_model_dir=snakemake.input.model[0] if snakemake.input.model else None,
                       default_template=ALPACA_PAIRWISE_TEMPLATE if study.preferences else None,
                       verdict_cache=Path(snakemake.params.verdict_cache), device=study.device,
                       cache_dir=jobs.vllm_cache(snakemake))
    try:
        table = judge.compare(instruction.loc[requests["prompt_id"]].tolist(), requests["completion"].tolist(),
                              requests["opponent_text"].tolist())
    except JudgeUnavailable as error:  # the verdicts received so far stay in the cache for the rerun
        raise SystemExit(f"pairwise judge {judge_name}: {error}") from None
    verdicts = pd.concat([requests[["policy", "temperature", "prompt_id", "opponent"]], table], axis=1)
    verdicts.to_parquet(snakemake.output.verdicts, index=False)
    bias = position_bias(pd.concat([verdicts["verdict_in_order"], verdicts["verdict_swapped"]]))
    print(f"{len(verdicts)} comparisons, position bias {bias}")
    mlflow.log_metrics({k: v for k, v in bias.items() if v == v})
    counters = {k: getattr(judge, k) for k in ("cache_hits", "requests_sent", "unparsed") if hasattr(judge, k)}
    if counters:  # an HTTP judge: what the rerun reused, what it paid for, answers that were no label
        print(f"HTTP judge: {counters}")
        mlflow.log_metrics({f"http_{k}": float(v) for k, v in counters.items()})
    mlflow.log_table(pd.concat([requests[["policy", "temperature", "prompt", "completion", "opponent", "opponent_text"]], table], axis=1),
                     f"verdicts_{judge_name}.json")
