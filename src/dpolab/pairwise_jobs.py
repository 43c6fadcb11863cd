"""The pairwise_judge stage's job: one pairwise judge (an LLM through vLLM, or an HTTP endpoint)
compares every policy's answer with SFT's (same prompt, same temperature) and with the dataset's
chosen response, in both orders; its verdicts are written and logged. One job per judge, so the
judge's engine starts once for every policy and temperature."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dpolab.compare import BASELINE, CHOSEN, dataset_responses
from dpolab.generate import read_samples
from dpolab.study import Study

REQUEST_COLUMNS = ["policy", "temperature", "prompt_id", "prompt", "completion", "opponent", "opponent_text"]


def judge_requests(prompts: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """One row per comparison: every policy but SFT against SFT's answer to the same prompt at the
    same temperature (opponent `sft`), and every policy (SFT too) against the dataset's chosen
    response where the prompt has one (opponent `chosen`). `samples`: policy, temperature,
    prompt_id, prompt, completion."""
    chosen = dataset_responses(prompts)
    sft = samples[samples["policy"] == BASELINE].rename(columns={"completion": "opponent_text"})
    vs_sft = samples[samples["policy"] != BASELINE].merge(
        sft[["temperature", "prompt_id", "opponent_text"]], on=["temperature", "prompt_id"], validate="many_to_one"
    )
    vs_chosen = samples[samples["prompt_id"].isin(chosen.index)].assign(
        opponent_text=lambda frame: chosen.loc[frame["prompt_id"]].to_numpy()
    )
    requests = pd.concat([vs_sft.assign(opponent=BASELINE), vs_chosen.assign(opponent=CHOSEN)], ignore_index=True)
    return requests[REQUEST_COLUMNS]


def judged_instructions(prompts: pd.DataFrame, requests: pd.DataFrame) -> list[str]:
    """What the judge reads as each request's prompt: the instruction as a person wrote it (a
    preference study's prompts, as the policy reads them, carry its chat template)."""
    column = "instruction" if "instruction" in prompts else "prompt"
    return prompts.set_index("prompt_id")[column].loc[requests["prompt_id"]].tolist()


def read_policy_samples(policy_temperatures: list[tuple[str, str]], files: list[Path]) -> pd.DataFrame:
    frames = [
        read_samples(f).assign(policy=p, temperature=float(t))
        for (p, t), f in zip(policy_temperatures, files, strict=True)
    ]
    return pd.concat(frames, ignore_index=True)[["policy", "temperature", "prompt_id", "prompt", "completion"]]


def judge_pairs(
    study: Study,
    judge_name: str,
    *,
    prompts_file: Path,
    policy_temperatures: list[tuple[str, str]],
    samples_files: list[Path],
    verdicts_file: Path,
    verdict_cache: Path,
    base_model_dir: Path | None = None,
    cache_dir: Path | None = None,
    log: bool = True,
) -> pd.DataFrame:
    """Judge every request (judge_requests) with the study's judge `judge_name`; verdicts to
    `verdicts_file` (an HTTP judge keeps each verdict in `verdict_cache` as it arrives, so a failed
    job's verdicts are not paid for again). With `log`: position bias, the HTTP judge's counters
    and the verdicts to the active MLflow run. A judge that cannot be reached ends the job with one
    message naming it (SystemExit)."""
    import mlflow

    from dpolab.http_judge import ALPACA_PAIRWISE_TEMPLATE, JudgeUnavailable
    from dpolab.judge_factory import make_judge
    from dpolab.judges import position_bias

    spec = study.section("judges")[judge_name]
    prompts = pd.read_parquet(prompts_file)
    requests = judge_requests(prompts, read_policy_samples(policy_temperatures, samples_files))
    judge = make_judge(
        judge_name,
        spec,
        base_model_dir=base_model_dir,
        default_template=ALPACA_PAIRWISE_TEMPLATE if study.preferences else None,
        verdict_cache=verdict_cache,
        device=study.device,
        cache_dir=cache_dir,
    )
    try:
        table = judge.compare(
            judged_instructions(prompts, requests), requests["completion"].tolist(), requests["opponent_text"].tolist()
        )
    except JudgeUnavailable as error:  # the verdicts received so far stay in the cache for the rerun
        raise SystemExit(f"pairwise judge {judge_name}: {error}") from None
    verdicts = pd.concat([requests[["policy", "temperature", "prompt_id", "opponent"]], table], axis=1)
    verdicts.to_parquet(verdicts_file, index=False)
    bias = position_bias(pd.concat([verdicts["verdict_in_order"], verdicts["verdict_swapped"]]))
    print(f"{len(verdicts)} comparisons, position bias {bias}")
    counters = {k: getattr(judge, k) for k in ("cache_hits", "requests_sent", "unparsed") if hasattr(judge, k)}
    if counters:  # an HTTP judge: what the rerun reused, what it paid for, answers that were no label
        print(f"HTTP judge: {counters}")
    if log:
        mlflow.log_metrics({k: v for k, v in bias.items() if v == v})
        mlflow.log_metrics({f"http_{k}": float(v) for k, v in counters.items()})
        mlflow.log_table(
            pd.concat(
                [requests[["policy", "temperature", "prompt", "completion", "opponent", "opponent_text"]], table],
                axis=1,
            ),
            f"verdicts_{judge_name}.json",
        )
    return verdicts
