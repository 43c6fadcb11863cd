"""Preference pairs from SFT samples ranked by the gold judge, with an optional injected
length bias (a known fraction of pairs relabelled in favour of the longer completion)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def build_pairs(
    prompts: pd.DataFrame,
    samples: list[list],
    scores: list[np.ndarray],
    *,
    min_score_margin: float,
    length_bias: float,
    seed: int,
) -> pd.DataFrame:
    """For each prompt keep (best, worst) of its scored samples when their score gap is at
    least `min_score_margin`; then relabel a `length_bias` fraction of the pairs so the
    longer completion (in tokens) is chosen. Lengths and scores stay with their text."""
    rows = []
    for prompt, prompt_samples, prompt_scores in zip(prompts.itertuples(index=False), samples, scores):
        best, worst = int(np.argmax(prompt_scores)), int(np.argmin(prompt_scores))
        if prompt_scores[best] - prompt_scores[worst] < min_score_margin or best == worst:
            continue
        chosen, rejected = prompt_samples[best], prompt_samples[worst]
        rows.append(
            {
                "prompt_id": int(prompt.prompt_id),
                "prompt": prompt.prompt,
                "chosen": chosen.completion,
                "rejected": rejected.completion,
                "chosen_score": float(prompt_scores[best]),
                "rejected_score": float(prompt_scores[worst]),
                "chosen_tokens": len(chosen.completion_token_ids),
                "rejected_tokens": len(rejected.completion_token_ids),
            }
        )
    pairs = pd.DataFrame(rows)
    if pairs.empty:
        raise ValueError("no preference pairs: every prompt's samples scored within pairs.min_score_margin")
    pairs.insert(0, "pair_id", np.arange(len(pairs)))
    return inject_length_bias(pairs, length_bias, seed)


def inject_length_bias(pairs: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """Relabel round(fraction * n) randomly chosen pairs so that chosen is the longer one."""
    pairs = pairs.copy()
    pairs["relabelled_for_length"] = False
    n = round(fraction * len(pairs))
    if n == 0:
        return pairs
    picked = np.random.default_rng(seed).choice(len(pairs), size=n, replace=False)
    for index in picked:
        row = pairs.iloc[index]
        if row["rejected_tokens"] > row["chosen_tokens"]:
            swapped = {
                "chosen": row["rejected"],
                "rejected": row["chosen"],
                "chosen_score": row["rejected_score"],
                "rejected_score": row["chosen_score"],
                "chosen_tokens": row["rejected_tokens"],
                "rejected_tokens": row["chosen_tokens"],
                "relabelled_for_length": True,
            }
            for key, value in swapped.items():
                pairs.at[pairs.index[index], key] = value
    return pairs


def pair_stats(pairs: pd.DataFrame) -> dict:
    """Size, lengths and relabelling of a study's pairs; the judge's scores where the pairs were
    ranked by one (the IMDb miniature; a preference dataset's pairs have none)."""
    scores = {
        f"{side}_score_mean": float(pairs[f"{side}_score"].mean())
        for side in ("chosen", "rejected")
        if f"{side}_score" in pairs
    }
    return {
        "pairs": int(len(pairs)),
        **scores,
        "chosen_longer_share": float((pairs["chosen_tokens"] > pairs["rejected_tokens"]).mean()),
        "length_difference_mean": float((pairs["chosen_tokens"] - pairs["rejected_tokens"]).mean()),
        "relabelled_for_length": int(pairs["relabelled_for_length"].sum()),
    }


def make_pairs(
    study,
    *,
    prompts_file: Path,
    sft_dir: Path,
    judge_dir: Path,
    pairs_file: Path,
    stats_file: Path,
    cache_dir: Path | None = None,
    log: bool = True,
) -> pd.DataFrame:
    """The pairs job: the SFT model samples `completions_per_prompt` answers to each training prompt,
    the gold classifier scores each whole review (prompt followed by completion), and build_pairs
    takes the best and the worst; pairs.parquet and stats.json (and, with `log`, the active MLflow run)."""
    import json

    import mlflow

    from dpolab.generate import make_sampler
    from dpolab.judges import GoldJudge

    cfg = study.pairs
    prompts = pd.read_parquet(prompts_file)
    sampler = make_sampler(
        study.generation.engine,
        Path(sft_dir),
        max_model_len=cfg.max_new_tokens + 64,
        seed=cfg.seed,
        device=study.device,
        cache_dir=cache_dir,
    )
    samples = sampler.sample(
        list(zip(prompts["prompt_id"].tolist(), prompts["prompt"])),
        n=cfg.completions_per_prompt,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_new_tokens=cfg.max_new_tokens,
        seed=cfg.seed,
    )
    judge = GoldJudge.load(Path(judge_dir))
    scores = [judge.score_texts([p + s.completion for s in row]) for p, row in zip(prompts["prompt"], samples)]
    pairs = build_pairs(
        prompts, samples, scores, min_score_margin=cfg.min_score_margin, length_bias=cfg.length_bias, seed=cfg.seed
    )
    pairs.to_parquet(pairs_file, index=False)
    stats = pair_stats(pairs)
    Path(stats_file).write_text(json.dumps(stats, indent=2))
    if log:
        mlflow.log_metrics(stats)
        mlflow.log_table(pairs.head(cfg.sample_size), "pairs_sample.json")
    return pairs
