import json
from pathlib import Path

import mlflow
import pandas as pd

from dpolab import jobs
from dpolab.generate import make_sampler
from dpolab.judges import GoldJudge
from dpolab.pairs import build_pairs, pair_stats

study = jobs.study_of(snakemake)
cfg = study.pairs
with jobs.job(snakemake, "pairs", params={"pairs": study.section("pairs")}):
    prompts = pd.read_parquet(snakemake.input.prompts)
    sampler = make_sampler(
        study.generation.engine, Path(snakemake.input.sft),
        max_model_len=cfg.max_new_tokens + 64, seed=cfg.seed, device=study.device,
        cache_dir=jobs.vllm_cache(snakemake),
    )
    samples = sampler.sample(
        list(zip(prompts["prompt_id"].tolist(), prompts["prompt"])), n=cfg.completions_per_prompt,
        temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed,
    )
    judge = GoldJudge.load(Path(snakemake.input.judge))
    # The gold judge reads the whole review: prompt followed by completion.
    scores = [judge.score_texts([p + s.completion for s in row]) for p, row in zip(prompts["prompt"], samples)]
    pairs = build_pairs(
        prompts, samples, scores, min_score_margin=cfg.min_score_margin, length_bias=cfg.length_bias, seed=cfg.seed,
    )
    pairs.to_parquet(snakemake.output.pairs, index=False)
    stats = pair_stats(pairs)
    Path(snakemake.output.stats).write_text(json.dumps(stats, indent=2))
    mlflow.log_metrics(stats)
    mlflow.log_table(pairs.head(cfg.sample_size), "pairs_sample.json")
