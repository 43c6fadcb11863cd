"""LoRA policies served on their base model (`max_lora_rank`: vLLM's enable_lora, the adapter on
each call) sample and score exactly as the same policies merged into full weights, which is what
lets the generate stage serve many LoRA policies from one engine (generate_jobs.generate_adapters)
instead of starting an engine per merged policy.

Two adapters on the smoke study's scratch model: one trained by a few DPO steps at a high learning
rate (so its greedy completions differ from the base model's), and its opposite (every lora_B
negated): a second, clearly different policy without a second training run. Reference: the merged
weights in a plain vLLM engine (one engine, the other weights swapped in with load_weights) and
transformers forwards of the base and of PEFT's model.

Tolerance: per-sample summed log-probs (up to 12 tokens) agree within LOGP_TOL nats; the two
computations differ only by fp32 rounding (x·A·B added to x·W against x·(W + B·A)), measured at
~1e-5."""

import json
import math

import numpy as np
import pytest

from helpers.examples import PAIRS

PROMPTS = list(
    enumerate(
        ["This movie was", "I saw it", "The plot", "Acting is", "What a", "Never again", "I watched it", "The film"]
    )
)
TEMPERATURES = [0.0, 1.0]
SAMPLING = dict(n=1, top_p=1.0, max_new_tokens=12, seed=3)
LOGP_TOL = 1e-3  # nats per sample
RANK = 8


@pytest.fixture(scope="module")
def policies(vllm_model_dir, tmp_path_factory):
    """{"base": the SFT stand-in, "adapters": [trained, opposite], "merged": [each merged]}."""
    import torch
    from safetensors.torch import load_file, save_file

    from dpolab.settings import PeftSettings
    from dpolab.train import DPOSettings, compute_reference_logps, merge_adapter, run_dpo

    root = tmp_path_factory.mktemp("lora-policies")
    cfg = DPOSettings(
        max_steps=3,
        batch_size=6,
        gradient_accumulation_steps=1,
        learning_rate=5e-2,
        warmup_steps=0,
        max_length=32,
        logging_steps=1,
    )
    reference = compute_reference_logps(vllm_model_dir, PAIRS, cfg, root / "reference", use_cpu=True)
    meta = json.loads((root / "reference" / "meta.json").read_text())
    run_dpo(
        vllm_model_dir,
        PAIRS,
        reference,
        meta,
        cfg,
        loss_name="dpo",
        loss_params={},
        beta=0.1,
        seed=0,
        out_dir=root / "trained",
        use_cpu=True,
        mlflow_active=False,
        peft=PeftSettings(r=RANK, lora_alpha=16, lora_dropout=0.0),
    )
    trained, opposite = root / "trained" / "model", root / "opposite"
    opposite.mkdir()
    (opposite / "adapter_config.json").write_text((trained / "adapter_config.json").read_text())
    weights = load_file(trained / "adapter_model.safetensors")
    save_file(
        {name: -w if "lora_B" in name else w for name, w in weights.items()}, opposite / "adapter_model.safetensors"
    )
    assert any("lora_B" in name and torch.count_nonzero(w) for name, w in weights.items())
    merged = [root / "merged-trained", root / "merged-opposite"]
    for adapter, out in zip((trained, opposite), merged):
        merge_adapter(vllm_model_dir, adapter, out)
    return {"base": vllm_model_dir, "adapters": [trained, opposite], "merged": merged}


def tokens(samples: dict[float, list[list]], temperature: float) -> list[list[int]]:
    return [row[0].completion_token_ids for row in samples[temperature]]


def logps(samples: dict[float, list[list]], temperature: float) -> list[float]:
    return [row[0].logp for row in samples[temperature]]


def flat(samples: dict[float, list[list]]) -> tuple[list[list[int]], list[list[int]]]:
    """(prompt ids, completion ids) of every sample, temperature-major."""
    rows = [row[0] for t in TEMPERATURES for row in samples[t]]
    return [s.prompt_token_ids for s in rows], [s.completion_token_ids for s in rows]


def assert_same_samples(got: dict, expected: dict, label: str) -> None:
    """Token for token at every temperature (same per-request seeds), log-probs within LOGP_TOL."""
    for t in TEMPERATURES:
        assert tokens(got, t) == tokens(expected, t), f"{label}: completions differ at temperature {t}"
        assert logps(got, t) == pytest.approx(logps(expected, t), abs=LOGP_TOL), f"{label}, temperature {t}"


# ---- transformers (the fallback engine): PEFT adapters switched on and off ------------------------
def test_transformers_sampler_with_adapters_samples_as_the_merged_models(policies):
    from dpolab.generate import TransformersSampler

    prompts = PROMPTS[:4]  # one generate call per prompt and token: the fallback is slow
    greedy = dict(SAMPLING, temperature=0.0)

    def completions(rows):
        return [row[0].completion_token_ids for row in rows]

    shared = TransformersSampler(policies["base"], max_model_len=64, seed=0)
    expected = {None: shared.sample(prompts, **greedy)}  # load_policy on the base, no adapter attached yet
    for which in (0, 1):
        merged = TransformersSampler(policies["merged"][which], max_model_len=64, seed=0)
        expected[which] = merged.sample(prompts, **greedy)
    # the trained adapter (and its opposite) really change the greedy completions
    for which in (0, 1):
        changed = sum(a != b for a, b in zip(completions(expected[which]), completions(expected[None])))
        assert changed >= len(prompts) // 2, (which, changed)
    assert completions(expected[0]) != completions(expected[1])
    # on, off, the other adapter, the first again: each call is exactly its policy
    for which in (0, None, 1, 0):
        got = shared.sample(prompts, adapter=None if which is None else policies["adapters"][which], **greedy)
        assert completions(got) == completions(expected[which]), which
        assert [row[0].logp for row in got] == pytest.approx([row[0].logp for row in expected[which]], abs=LOGP_TOL)


# ---- vLLM: one engine with enable_lora against a plain engine on the merged weights ----------------
@pytest.fixture(scope="module")
def vllm_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("vllm-cache")


@pytest.fixture(scope="module")
def merged_samples(policies, vllm_cache):
    """Each policy's samples from a plain engine on its merged weights, and the base's from the
    same engine with the base swapped in: {0, 1 (the adapters), None (the base)}. One engine
    start; the engine is gone before the LoRA engine starts."""
    import gc

    from dpolab.generate import VLLMSampler

    engine = VLLMSampler(policies["merged"][0], max_model_len=64, seed=0, cache_dir=vllm_cache)
    samples = {0: engine.sample_temperatures(PROMPTS, TEMPERATURES, **SAMPLING)}
    engine.load_weights(policies["merged"][1])
    samples[1] = engine.sample_temperatures(PROMPTS, TEMPERATURES, **SAMPLING)
    engine.load_weights(policies["base"])
    samples[None] = engine.sample_temperatures(PROMPTS, TEMPERATURES, **SAMPLING)
    del engine
    gc.collect()
    return samples


@pytest.fixture(scope="module")
def lora_engine(policies, merged_samples, vllm_cache):
    from dpolab.generate import VLLMSampler

    return VLLMSampler(
        policies["base"], max_model_len=64, seed=0, cache_dir=vllm_cache, max_lora_rank=RANK, max_loras=2
    )


def test_an_adapter_on_the_lora_engine_samples_as_its_merged_engine(policies, merged_samples, lora_engine):
    got = lora_engine.sample_temperatures(PROMPTS, TEMPERATURES, adapter=policies["adapters"][0], **SAMPLING)
    assert_same_samples(got, merged_samples[0], "trained adapter")
    # the adapter is not a no-op in vLLM either
    assert sum(a != b for a, b in zip(tokens(got, 0.0), tokens(merged_samples[None], 0.0))) >= len(PROMPTS) // 2


def test_two_adapters_and_the_base_interleaved_in_one_engine(policies, merged_samples, lora_engine):
    from dpolab.models import completion_logps, load_policy

    order = [1, None, 0, 1, None, 0]
    for which in order:
        adapter = None if which is None else policies["adapters"][which]
        got = lora_engine.sample_temperatures(PROMPTS, TEMPERATURES, adapter=adapter, **SAMPLING)
        assert_same_samples(got, merged_samples[which], f"policy {which}")
    assert tokens(merged_samples[0], 0.0) != tokens(merged_samples[1], 0.0)
    # the adapter off is the base itself: its log-probs are a transformers forward of the base
    base, _ = load_policy(policies["base"])
    prompt_ids, completion_ids = flat(merged_samples[None])
    assert [x for t in TEMPERATURES for x in logps(merged_samples[None], t)] == pytest.approx(
        completion_logps(base, prompt_ids, completion_ids).tolist(), abs=LOGP_TOL
    )


def test_the_lora_engine_scores_the_policy_and_with_the_adapter_off_the_reference(
    policies, merged_samples, lora_engine
):
    """What generate_adapters writes: policy_samples with `adapter` takes the policy's log-probs
    from sampling and the reference's (the base's) from `score` on the same engine, adapter off.
    Scoring asks for prompt log-probs; vLLM 0.32's LoRA logits layer (the LM head wrapped for
    LoRA, vLLM's default unless the engine restricts LoRA to the adapters' modules) sizes its LoRA
    indices by sequences, not by prompt positions, and fails on several sequences in one call."""
    from dpolab.generate import policy_samples
    from dpolab.models import completion_logps, load_policy

    records = policy_samples(lora_engine, PROMPTS, TEMPERATURES, adapter=policies["adapters"][0], **SAMPLING)
    rows = [r for t in TEMPERATURES for r in records[t]]
    expected = [row[0] for t in TEMPERATURES for row in merged_samples[0][t]]
    assert [r["completion_token_ids"] for r in rows] == [s.completion_token_ids for s in expected]
    assert [r["policy_logps"] for r in rows] == pytest.approx([s.logp for s in expected], abs=LOGP_TOL)
    base, _ = load_policy(policies["base"])
    prompt_ids, completion_ids = [r["prompt_token_ids"] for r in rows], [r["completion_token_ids"] for r in rows]
    reference = completion_logps(base, prompt_ids, completion_ids)
    assert [r["reference_logps"] for r in rows] == pytest.approx(reference.tolist(), abs=LOGP_TOL)
    assert not np.allclose([r["policy_logps"] for r in rows], reference, atol=0.1)  # a real KL to measure
    # scoring with the adapter on gives the sampling log-probs back
    assert lora_engine.score(prompt_ids, completion_ids, adapter=policies["adapters"][0]).tolist() == pytest.approx(
        [r["policy_logps"] for r in rows], abs=LOGP_TOL
    )
    assert all(math.isfinite(r["reference_logps"]) for r in rows)
