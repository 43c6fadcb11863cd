import json
from dataclasses import asdict
from pathlib import Path

import mlflow
import pandas as pd

from dpolab import jobs
from dpolab.generate import make_sampler

study = jobs.study_of(snakemake)
cfg = study.generation
with jobs.job(snakemake, "generate", tags=jobs.temperatures_tag(study), params={"generation": study.section("generation")}):
    prompts = pd.read_parquet(snakemake.input.prompts)
    requests = list(zip(prompts["prompt_id"].tolist(), prompts["prompt"]))
    # the IMDb prompts are a few words; a preference study's test prompts carry their token counts
    longest_prompt = int(prompts["prompt_tokens"].max()) + 8 if "prompt_tokens" in prompts else 64
    sampler = make_sampler(
        cfg.engine, Path(snakemake.input.model), max_model_len=cfg.max_new_tokens + longest_prompt, seed=cfg.seed,
        device=study.device, cache_dir=jobs.vllm_cache(snakemake),
    )
    for temperature, out_file in zip(study.temperatures, snakemake.output.samples):
        # The same seeds for every policy: policies differ only by their weights.
        rows = sampler.sample(requests, n=1, temperature=float(temperature), top_p=cfg.top_p,
                              max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
        with open(out_file, "w") as handle:
            for (pid, prompt), (sample,) in zip(requests, rows):
                record = {"prompt": prompt, "temperature": float(temperature), **asdict(sample)}
                handle.write(json.dumps(record) + "\n")
        mlflow.log_artifact(out_file, artifact_path=f"generations/temp~{float(temperature):g}")
