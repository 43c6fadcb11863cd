"""dpolab.generate_jobs: the generate stage's jobs, on the transformers engine
(`generation.engine: transformers`) with the tiny model, no vLLM. Pinned: read_requests gives
(prompt_id, prompt) in file order and the model length the samples need (8 more than the longest
prompt's tokens, 64 for the IMDb prompts that carry none); _write writes each temperature's
records to its file, in order; generate_one writes one samples file per temperature for the SFT
policy (its reference log-probs are its own), for a fully trained policy (the reference's weights
swapped in) and for a LoRA adapter on the reference (the base with the adapter off);
generate_adapters writes policy-major files, each policy inside its own `policy_run` context."""

import numpy as np
import pandas as pd
import pytest
import yaml

from dpolab.config import ROOT, load_study
from dpolab.generate import read_samples
from dpolab.generate_jobs import _write, generate_adapters, generate_one, read_requests
from helpers.examples import perturbed_copy

PROMPTS = pd.DataFrame({"prompt_id": [4, 1, 9], "prompt": ["This movie was", "I watched it", "The plot"]})
COLUMNS = {
    "prompt",
    "temperature",
    "prompt_id",
    "sample_index",
    "seed",
    "completion",
    "prompt_token_ids",
    "completion_token_ids",
    "finish_reason",
    "policy_logps",
    "reference_logps",
}


@pytest.fixture(scope="module")
def study():
    config = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    config["generation"] = {**config["generation"], "engine": "transformers", "max_new_tokens": 4}
    return load_study(config, check_environment=False)


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.parquet"
    PROMPTS.to_parquet(path)
    return path


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    """Two LoRA adapters (ranks 2 and 4) on the tiny model, their B matrices non-zero so each
    changes the model."""
    import torch
    from peft import LoraConfig, get_peft_model

    from dpolab.models import load_policy

    folders = []
    for rank in (2, 4):
        base, _ = load_policy(tiny_model_dir)
        torch.manual_seed(rank)
        model = get_peft_model(
            base, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear", task_type="CAUSAL_LM")
        )
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(0, 0.5)
        folder = tmp_path_factory.mktemp(f"adapter-r{rank}")
        model.save_pretrained(folder)
        folders.append(folder)
    return folders


def _outputs(tmp_path, name="policy", temperatures=("0", "1")):
    return [tmp_path / name / f"temp~{t}" / "samples.jsonl" for t in temperatures]


def _read(paths):
    for path in paths:
        assert path.is_file(), path
    return [read_samples(path) for path in paths]


def test_read_requests_keeps_file_order_and_needs_64_tokens_for_imdb_prompts(prompts_file):
    requests, longest = read_requests(prompts_file)
    assert requests == [(4, "This movie was"), (1, "I watched it"), (9, "The plot")]
    assert longest == 64


def test_read_requests_fits_the_longest_prompt_of_a_preference_study(tmp_path):
    path = tmp_path / "test_prompts.parquet"
    PROMPTS.assign(prompt_tokens=[3, 120, 7]).to_parquet(path)
    requests, longest = read_requests(path)
    assert [pid for pid, _ in requests] == [4, 1, 9] and longest == 128
    assert all(isinstance(pid, int) for pid, _ in requests)  # plain ints: JSON and dict keys downstream


def test_write_puts_each_temperatures_records_in_its_file(tmp_path):
    records = {
        0.0: [{"prompt_id": 1, "temperature": 0.0}],
        0.7: [{"prompt_id": 1, "temperature": 0.7}, {"prompt_id": 2, "temperature": 0.7}],
    }
    files = [tmp_path / "t0.jsonl", tmp_path / "t07.jsonl"]
    _write(records, files)  # no MLflow run open: files only
    cold, warm = _read(files)
    assert cold.to_dict("records") == records[0.0] and warm.to_dict("records") == records[0.7]


def test_the_sft_policy_is_its_own_reference(study, tiny_model_dir, prompts_file, tmp_path):
    out_files = _outputs(tmp_path, "sft")
    for path in out_files:
        path.parent.mkdir(parents=True)
    generate_one(
        study,
        "sft",
        model_dir=tiny_model_dir,
        start_dir=tiny_model_dir,
        reference_dir=tiny_model_dir,
        prompts_file=prompts_file,
        out_files=out_files,
        cache_dir=tmp_path / "cache",
    )
    for frame, temperature in zip(_read(out_files), study.temperatures):
        assert set(frame.columns) == COLUMNS and len(frame) == len(PROMPTS)
        assert frame["prompt_id"].tolist() == [4, 1, 9] and (frame["temperature"] == temperature).all()
        assert frame["prompt"].tolist() == PROMPTS["prompt"].tolist()
        assert (frame["completion_token_ids"].map(len) <= 4).all()
        assert (frame["policy_logps"] == frame["reference_logps"]).all()  # KL exactly zero


def test_a_fully_trained_policy_is_scored_by_the_reference(study, tiny_model_dir, prompts_file, tmp_path):
    policy_dir = tmp_path / "policy-model"
    perturbed_copy(tiny_model_dir, policy_dir)
    out_files = _outputs(tmp_path)
    for path in out_files:
        path.parent.mkdir(parents=True)
    generate_one(
        study,
        "variant~dpo/beta~0.1/seed~0",
        model_dir=policy_dir,
        start_dir=tiny_model_dir,
        reference_dir=tiny_model_dir,
        prompts_file=prompts_file,
        out_files=out_files,
        cache_dir=tmp_path / "c",
    )
    frames = _read(out_files)
    both = pd.concat(frames)
    assert len(both) == 2 * len(PROMPTS) and np.isfinite(both[["policy_logps", "reference_logps"]].to_numpy()).all()
    assert not np.allclose(both["policy_logps"], both["reference_logps"])  # other weights, other log-probs


def test_a_lora_policy_on_the_reference_is_the_base_with_the_adapter_off(
    study, tiny_model_dir, adapters, prompts_file, tmp_path
):
    from dpolab.models import completion_logps, load_policy

    out_files = _outputs(tmp_path)
    for path in out_files:
        path.parent.mkdir(parents=True)
    generate_one(
        study,
        "variant~dpo/beta~0.1/seed~0",
        model_dir=adapters[0],
        start_dir=tiny_model_dir,
        reference_dir=tiny_model_dir,
        prompts_file=prompts_file,
        out_files=out_files,
        cache_dir=tmp_path / "c",
    )
    greedy = _read(out_files)[0]
    reference, _ = load_policy(tiny_model_dir)
    expected = completion_logps(reference, greedy["prompt_token_ids"].tolist(), greedy["completion_token_ids"].tolist())
    np.testing.assert_allclose(greedy["reference_logps"], expected, rtol=1e-4, atol=1e-4)
    assert not np.allclose(greedy["policy_logps"], greedy["reference_logps"])


def test_one_engine_serves_several_adapters_policy_major(study, tiny_model_dir, adapters, prompts_file, tmp_path):
    policies = ["variant~dpo/beta~0.1/seed~0", "variant~kto/beta~0.1/seed~0"]
    out_files = _outputs(tmp_path, "dpo") + _outputs(tmp_path, "kto")
    for path in out_files:
        path.parent.mkdir(parents=True, exist_ok=True)
    opened = []

    class Run:
        def __init__(self, policy):
            self.policy = policy

        def __enter__(self):
            opened.append(("enter", self.policy))

        def __exit__(self, *exc):
            opened.append(("exit", self.policy))

    generate_adapters(
        study,
        policies,
        list(adapters),
        reference_dir=tiny_model_dir,
        prompts_file=prompts_file,
        out_files=out_files,
        cache_dir=tmp_path / "cache",
        policy_run=Run,
    )
    assert opened == [("enter", policies[0]), ("exit", policies[0]), ("enter", policies[1]), ("exit", policies[1])]
    dpo_cold, dpo_warm, kto_cold, kto_warm = _read(out_files)
    assert [len(f) for f in (dpo_cold, dpo_warm, kto_cold, kto_warm)] == [len(PROMPTS)] * 4
    assert (dpo_cold["temperature"] == 0.0).all() and (kto_warm["temperature"] == 1.0).all()
    # the adapters differ, so the policies' log-probs of their own greedy answers do
    assert not np.allclose(dpo_cold["policy_logps"], kto_cold["policy_logps"])
