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
    # The same seeds for every policy: policies differ only by their weights.
    by_temperature = sampler.sample_temperatures(requests, [float(t) for t in study.temperatures], n=1, top_p=cfg.top_p,
                                                 max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
    drawn = {temperature: [row[0] for row in by_temperature[float(temperature)]] for temperature in study.temperatures}
    everything = [sample for samples in drawn.values() for sample in samples]
    if snakemake.wildcards.policy == "sft":  # the policy is the reference: KL is exactly zero
        reference_logps = [sample.logp for sample in everything]
    else:  # the reference's log-probs of the same tokens, from the same engine with the SFT weights swapped in
        sampler.load_weights(Path(snakemake.input.reference))
        reference_logps = sampler.score([s.prompt_token_ids for s in everything], [s.completion_token_ids for s in everything])
    reference_of = iter(reference_logps)
    for temperature, out_file in zip(study.temperatures, snakemake.output.samples):
        with open(out_file, "w") as handle:
            for (pid, prompt), sample in zip(requests, drawn[temperature]):
                record = {"prompt": prompt, "temperature": float(temperature), **asdict(sample)}
                record.update(policy_logps=record.pop("logp"), reference_logps=float(next(reference_of)))
                handle.write(json.dumps(record) + "\n")
        mlflow.log_artifact(out_file, artifact_path=f"generations/temp~{float(temperature):g}")
