"""Sampling completions: vLLM by default, transformers as a config-selected fallback.

Every request carries its own seed (derived from the config seed, the prompt id and the
sample index), so samples do not depend on batching, thread count or process."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

# vLLM's CPU build reads these at import time: a 1 GiB KV cache (plenty for the study's short
# sequences, and jobs side by side share the RAM), the engine core in this process (no extra
# process per job), OpenMP threads not pinned to cores (another job may use them), no Hub access.
VLLM_CPU_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "HF_HUB_OFFLINE": "1",
}


@dataclass(frozen=True)
class Sample:
    prompt_id: int
    sample_index: int
    seed: int
    completion: str
    prompt_token_ids: list[int]
    completion_token_ids: list[int]
    finish_reason: str


def read_samples(path) -> "pd.DataFrame":
    """A generate job's samples.jsonl as a DataFrame, floats exact: pandas' default JSON parser
    reads 0.7 as 0.7000000000000001, and temperatures are join keys (summary, win rates)."""
    import pandas as pd

    return pd.read_json(path, lines=True, precise_float=True)


def request_seed(seed: int, prompt_id: int, sample_index: int = 0, salt: int = 0) -> int:
    """A distinct, reproducible 31-bit seed per request."""
    return (seed * 1_000_003 + prompt_id * 1_009 + sample_index * 7 + salt * 100_003) % (2**31 - 1)


def vllm_engine(model_dir: Path | str, *, max_model_len: int, seed: int, device: str = "cpu",
                cache_dir: Path | None = None, revision: str | None = None, trust_remote_code: bool = False):
    """A vLLM engine; on the CPU in fp32 (the dtype policies are trained and saved in) and eager mode (no CUDA graphs)."""
    if device == "cpu":
        for key, value in VLLM_CPU_ENV.items():
            os.environ.setdefault(key, value)
    os.environ.setdefault("VLLM_CACHE_ROOT", str(cache_dir or Path(tempfile.gettempdir()) / "dpolab-vllm-cache"))
    from vllm import LLM

    dtype = "float32" if device == "cpu" else "auto"
    return LLM(model=str(model_dir), dtype=dtype, max_model_len=max_model_len, enforce_eager=device == "cpu", seed=seed,
               revision=revision, trust_remote_code=trust_remote_code)


class VLLMSampler:
    def __init__(self, model_dir: Path, *, max_model_len: int, seed: int, device: str = "cpu", cache_dir: Path | None = None):
        self.llm = vllm_engine(model_dir, max_model_len=max_model_len, seed=seed, device=device, cache_dir=cache_dir)

    def sample(self, prompts: list[tuple[int, str]], *, n: int, temperature: float, top_p: float, max_new_tokens: int, seed: int, salt: int = 0) -> list[list[Sample]]:
        from vllm import SamplingParams

        seeds = [request_seed(seed, pid, 0, salt) for pid, _ in prompts]
        params = [
            SamplingParams(
                n=n,
                temperature=temperature,
                top_p=top_p if temperature > 0 else 1.0,
                max_tokens=max_new_tokens,
                seed=request_seed_value,
            )
            for request_seed_value in seeds
        ]
        outputs = self.llm.generate([text for _, text in prompts], params, use_tqdm=False)
        return [
            [
                Sample(pid, i, seed_value, o.text, list(out.prompt_token_ids), list(o.token_ids), str(o.finish_reason))
                for i, o in enumerate(out.outputs)
            ]
            for (pid, _), seed_value, out in zip(prompts, seeds, outputs)
        ]


class TransformersSampler:
    """The fallback: one `generate` call per request so each request's seed alone decides it."""

    def __init__(self, model_dir: Path, *, max_model_len: int, seed: int, device: str = "cpu", cache_dir: Path | None = None):
        from dpolab.models import load_policy

        self.model, self.tokenizer = load_policy(model_dir)
        self.device = torch.device(device)
        self.model.to(self.device).eval()

    @torch.no_grad()
    def sample(self, prompts, *, n, temperature, top_p, max_new_tokens, seed, salt=0):
        results = []
        for pid, text in prompts:
            ids = self.tokenizer(text, return_tensors="pt").input_ids.to(self.device)
            torch.manual_seed(request_seed(seed, pid, 0, salt))
            kwargs = dict(do_sample=True, temperature=temperature, top_p=top_p) if temperature > 0 else dict(do_sample=False)
            out = self.model.generate(
                ids,
                max_new_tokens=max_new_tokens,
                num_return_sequences=n,
                pad_token_id=self.tokenizer.pad_token_id,
                top_k=0 if temperature > 0 else None,
                **kwargs,
            )
            samples = []
            for i, row in enumerate(out):
                completion_ids = row[ids.shape[1] :].tolist()
                finish = "stop" if self.tokenizer.eos_token_id in completion_ids else "length"
                if finish == "stop":
                    completion_ids = completion_ids[: completion_ids.index(self.tokenizer.eos_token_id) + 1]
                text_out = self.tokenizer.decode(completion_ids, skip_special_tokens=True)
                samples.append(Sample(pid, i, request_seed(seed, pid, 0, salt), text_out, ids[0].tolist(), completion_ids, finish))
            results.append(samples)
        return results


def make_sampler(engine: str, model_dir: Path, **kwargs):
    if engine == "vllm":
        return VLLMSampler(model_dir, **kwargs)
    if engine == "transformers":
        return TransformersSampler(model_dir, **kwargs)
    raise ValueError(f"generation.engine: unknown engine {engine!r}")
