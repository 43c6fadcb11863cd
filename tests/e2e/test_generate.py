"""vLLM, the default generation engine, on the smoke study's tiny model (a real engine start)."""

import pytest

from dpolab.generate import make_sampler
from helpers.examples import perturbed_copy


def test_vllm_engine_swaps_in_the_reference_weights(tmp_path):
    """vLLM: sampled log-probs equal a transformers forward, and after load_weights (in-place
    reload, a tied LM head included) the engine scores as the other model does."""
    from dpolab.config import ROOT, read_study
    from dpolab.models import completion_logps, load_policy, prepare_base_model

    # the smoke study's scratch model: vLLM's CPU attention needs a head size of 32 or more
    tiny_model_dir = tmp_path / "policy"
    prepare_base_model(read_study(ROOT / "configs" / "smoke.yaml").section("model"), tiny_model_dir)
    other = perturbed_copy(tiny_model_dir, tmp_path / "other")
    sampler = make_sampler("vllm", tiny_model_dir, max_model_len=64, seed=0, cache_dir=tmp_path / "vllm-cache")
    rows = sampler.sample(
        [(0, "This movie was"), (1, "I watched it")], n=1, temperature=0.5, top_p=1.0, max_new_tokens=8, seed=3
    )
    samples = [row[0] for row in rows]
    prompt_ids, completion_ids = [s.prompt_token_ids for s in samples], [s.completion_token_ids for s in samples]
    policy, _ = load_policy(tiny_model_dir)
    assert [s.logp for s in samples] == pytest.approx(
        completion_logps(policy, prompt_ids, completion_ids).tolist(), abs=1e-3
    )
    assert sampler.score(prompt_ids, completion_ids).tolist() == pytest.approx([s.logp for s in samples], abs=1e-3)
    sampler.load_weights(tmp_path / "other")
    assert sampler.score(prompt_ids, completion_ids).tolist() == pytest.approx(
        completion_logps(other, prompt_ids, completion_ids).tolist(), abs=1e-3
    )
