"""The transformers fallback sampler: per-request seeds make samples reproducible and
independent of the order requests come in. (vLLM, the default engine, is tested in tests/e2e/test_generate.py.)"""

import pytest

from dpolab.generate import TransformersSampler, make_sampler, request_seed
from helpers.examples import perturbed_copy


def test_request_seeds_are_distinct_and_stable():
    seeds = {request_seed(0, pid, i) for pid in range(100) for i in range(4)}
    assert len(seeds) == 400
    assert request_seed(3, 7, 1) == request_seed(3, 7, 1)


def test_transformers_sampler_is_reproducible(tiny_model_dir):
    sampler = make_sampler("transformers", tiny_model_dir, max_model_len=64, seed=0)
    assert isinstance(sampler, TransformersSampler)
    prompts = [(0, "This movie was"), (1, "I watched it")]
    kwargs = dict(n=2, temperature=1.0, top_p=1.0, max_new_tokens=6, seed=5)
    first = sampler.sample(prompts, **kwargs)
    again = sampler.sample(prompts[::-1], **kwargs)[::-1]  # order of requests does not matter
    assert [[s.completion_token_ids for s in row] for row in first] == [
        [s.completion_token_ids for s in row] for row in again
    ]
    assert all(len(s.completion_token_ids) <= 6 for row in first for s in row)
    assert first[0][0].prompt_token_ids == sampler.tokenizer("This movie was").input_ids
    greedy = sampler.sample(prompts, n=1, temperature=0.0, top_p=1.0, max_new_tokens=6, seed=1)
    greedy_other_seed = sampler.sample(prompts, n=1, temperature=0.0, top_p=1.0, max_new_tokens=6, seed=2)
    assert [r[0].completion_token_ids for r in greedy] == [r[0].completion_token_ids for r in greedy_other_seed]


def test_unknown_engine():
    with pytest.raises(ValueError, match="generation.engine"):
        make_sampler("tgi", None, max_model_len=8, seed=0)


def test_samples_read_back_with_exact_temperatures(tmp_path):
    """Temperatures are join keys of the summary: 0.7 must not come back as 0.7000000000000001
    (pandas' default JSON float parser), or a judge's rows at that temperature drop out."""
    import json

    from dpolab.generate import read_samples

    path = tmp_path / "samples.jsonl"
    path.write_text(
        "".join(json.dumps({"prompt_id": i, "temperature": t}) + "\n" for i, t in enumerate([0.7, 0.3, 0.1]))
    )
    assert read_samples(path)["temperature"].tolist() == [0.7, 0.3, 0.1]


def test_samples_carry_their_log_probs_and_the_sampler_scores_other_weights(tiny_model_dir, tmp_path):
    """A sample's logp is its completion's log-prob under the policy that drew it (at
    temperature 1, whatever the sampling temperature); after load_weights, score gives another
    model's log-probs of the same tokens: what the generate job writes for the KL."""
    from dpolab.models import completion_logps, load_policy

    other = perturbed_copy(tiny_model_dir, tmp_path / "other")

    sampler = make_sampler("transformers", tiny_model_dir, max_model_len=64, seed=0)
    rows = sampler.sample(
        [(0, "This movie was"), (1, "I watched it")], n=2, temperature=0.7, top_p=1.0, max_new_tokens=6, seed=3
    )
    samples = [s for row in rows for s in row]
    prompt_ids, completion_ids = [s.prompt_token_ids for s in samples], [s.completion_token_ids for s in samples]
    policy, _ = load_policy(tiny_model_dir)
    assert [s.logp for s in samples] == pytest.approx(
        completion_logps(policy, prompt_ids, completion_ids).tolist(), abs=1e-4
    )
    sampler.load_weights(tmp_path / "other")
    assert sampler.score(prompt_ids, completion_ids).tolist() == pytest.approx(
        completion_logps(other, prompt_ids, completion_ids).tolist(), abs=1e-4
    )


def test_every_temperature_in_one_call_gives_what_separate_calls_give(tiny_model_dir):
    sampler = make_sampler("transformers", tiny_model_dir, max_model_len=64, seed=0)
    prompts = [(0, "This movie was"), (1, "I watched it")]
    together = sampler.sample_temperatures(prompts, [0.0, 1.0], n=1, top_p=1.0, max_new_tokens=5, seed=2)
    for temperature in (0.0, 1.0):
        alone = sampler.sample(prompts, n=1, temperature=temperature, top_p=1.0, max_new_tokens=5, seed=2)
        assert together[temperature] == alone
