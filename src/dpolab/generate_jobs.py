"""The generate stage's jobs: every policy answers the test prompts, each sample with its
log-prob under the policy and under the reference (the SFT model).

A fully trained policy gets its own engine (its weights, then the reference's swapped in). A
LoRA policy trained on the SFT model is served by an engine on the SFT model with the adapter on
each request, so the reference is the same engine with the adapter off, and one engine serves a
whole batch of such policies (`generation.adapters_per_engine`): one start instead of one per
policy. A LoRA policy on another base (ORPO starts from the base model), or any with
`generation.lora_serving: merged` (auto on the CPU), is merged into full weights first."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import pandas as pd

from dpolab.generate import make_sampler, policy_samples, write_samples
from dpolab.study import Study

log = logging.getLogger("dpolab")


def read_requests(prompts_file: Path) -> tuple[list[tuple[int, str]], int]:
    """(prompt_id, prompt) of every test prompt and the model length the samples need."""
    prompts = pd.read_parquet(prompts_file)
    # the IMDb prompts are a few words; a preference study's test prompts carry their token counts
    longest_prompt = int(prompts["prompt_tokens"].max()) + 8 if "prompt_tokens" in prompts else 64
    return list(zip(prompts["prompt_id"].tolist(), prompts["prompt"])), longest_prompt


def _sampler(study: Study, model_dir: Path, longest_prompt: int, cache_dir: Path, **lora):
    cfg = study.generation
    return make_sampler(
        cfg.engine,
        model_dir,
        max_model_len=cfg.max_new_tokens + longest_prompt,
        seed=cfg.seed,
        device=study.device,
        cache_dir=cache_dir,
        tensor_parallel_size=study.distributed.tensor_parallel_size,
        **lora,
    )


def _samples(study: Study, sampler, requests, **how) -> dict[float, list[dict]]:
    cfg = study.generation
    return policy_samples(
        sampler, requests, study.temperatures, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, **how
    )


def _write(records: dict[float, list[dict]], out_files: list[Path]) -> None:
    import mlflow

    for (temperature, rows), out_file in zip(records.items(), out_files):
        write_samples(rows, out_file)
        if mlflow.active_run() is not None:
            mlflow.log_artifact(str(out_file), artifact_path=f"generations/temp~{temperature:g}")


def generate_one(
    study: Study,
    policy: str,
    *,
    model_dir: Path,
    start_dir: Path,
    reference_dir: Path,
    prompts_file: Path,
    out_files: list[Path],
    cache_dir: Path,
) -> None:
    """One policy in its own engine: `model_dir` holds full weights, or a LoRA adapter on `start_dir`."""
    from dpolab.models import adapter_rank, is_adapter  # here: torch loads after the job's run is open

    requests, longest_prompt = read_requests(prompts_file)
    if policy == "sft":  # the policy is the reference: KL is exactly zero
        records = _samples(study, _sampler(study, model_dir, longest_prompt, cache_dir), requests, is_reference=True)
    elif not is_adapter(model_dir):  # its weights, then the reference's swapped into the same engine
        records = _samples(
            study, _sampler(study, model_dir, longest_prompt, cache_dir), requests, reference_dir=reference_dir
        )
    elif start_dir.resolve() == reference_dir.resolve() and (study.shared_engine or study.generation.engine != "vllm"):
        # the adapter on the reference, served as an adapter: with it off, the engine is the reference
        sampler = _sampler(study, reference_dir, longest_prompt, cache_dir, max_lora_rank=adapter_rank(model_dir))
        records = _samples(study, sampler, requests, adapter=model_dir)
    else:  # an adapter merged into full weights first (on another base, or lora_serving merged)
        from dpolab.train import merge_adapter

        with tempfile.TemporaryDirectory(prefix="dpolab-merged-") as merged:
            merge_adapter(start_dir, model_dir, Path(merged))
            sampler = _sampler(study, Path(merged), longest_prompt, cache_dir)
            records = _samples(study, sampler, requests, reference_dir=reference_dir)
    _write(records, out_files)


def generate_adapters(
    study: Study,
    policies: list[str],
    adapters: list[Path],
    *,
    reference_dir: Path,
    prompts_file: Path,
    out_files: list[Path],
    cache_dir: Path,
    policy_run: Callable[[str], object] = lambda policy: nullcontext(),
) -> None:
    """Several LoRA policies on the SFT model from one engine: each policy's samples with the
    adapter on, the reference's log-probs with it off. `out_files`: per policy, one file per
    temperature (policy-major); `policy_run(policy)`: a context around each (its MLflow run)."""
    from dpolab.models import adapter_rank

    requests, longest_prompt = read_requests(prompts_file)
    rank = max(adapter_rank(adapter) for adapter in adapters)
    sampler = _sampler(
        study, reference_dir, longest_prompt, cache_dir, max_lora_rank=rank, max_loras=min(len(adapters), 8)
    )
    per_policy = len(study.temperatures)
    for index, (policy, adapter) in enumerate(zip(policies, adapters)):
        with policy_run(policy):
            log.info("policy %s (%d of %d in this engine)", policy, index + 1, len(policies))
            records = _samples(study, sampler, requests, adapter=adapter)
            _write(records, out_files[index * per_policy : (index + 1) * per_policy])
