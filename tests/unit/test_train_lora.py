"""LoRA policies through PEFT: DPO trains an adapter on the SFT model (the DPO loss starts at
log 2, since a fresh adapter changes nothing), only the adapter is saved, SFT can train and merge
one, every later stage loads either kind."""

import json
import math

import pandas as pd
import pytest
import torch

from dpolab.models import completion_logps, is_adapter, load_policy
from dpolab.settings import PeftSettings
from dpolab.train import DPOSettings, SFTSettings, compute_reference_logps, run_dpo, run_kto, run_orpo, run_sft
from helpers.examples import PAIRS

CFG = DPOSettings(
    max_steps=3,
    batch_size=6,
    gradient_accumulation_steps=1,
    learning_rate=1e-3,
    warmup_steps=0,
    max_length=32,
    logging_steps=1,
)
LORA = PeftSettings(r=8, lora_alpha=16, lora_dropout=0.0)


@pytest.fixture(scope="module")
def reference(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    logps = compute_reference_logps(tiny_model_dir, PAIRS, CFG, out, use_cpu=True)
    return logps, json.loads((out / "meta.json").read_text())


@pytest.fixture(scope="module")
def lora_policy(tiny_model_dir, reference, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora")
    result = run_dpo(
        tiny_model_dir,
        PAIRS,
        *reference,
        CFG,
        loss_name="dpo",
        loss_params={},
        beta=0.1,
        seed=0,
        out_dir=out,
        use_cpu=True,
        mlflow_active=False,
        peft=LORA,
    )
    return out, result


def losses_of(out_dir):
    return [entry["loss"] for entry in json.loads((out_dir / "train_log.json").read_text()) if "loss" in entry]


def test_lora_dpo_starts_at_log_2_and_learns(lora_policy):
    out, result = lora_policy
    losses = losses_of(out)
    assert result["steps"] == 3 and len(losses) == 3
    # B = 0 at initialisation: the policy is the SFT model, every log-ratio is 0, the loss log 2
    assert losses[0] == pytest.approx(math.log(2), abs=1e-6)
    assert losses[-1] < losses[0]


def test_only_the_adapter_is_saved_and_it_loads_on_its_base(lora_policy, tiny_model_dir):
    out, _ = lora_policy
    model_dir = out / "model"
    assert is_adapter(model_dir)
    assert not list(model_dir.glob("model*.safetensors"))  # no full weights
    adapter_bytes = (model_dir / "adapter_model.safetensors").stat().st_size
    full_bytes = sum(p.stat().st_size for p in tiny_model_dir.glob("*.safetensors"))
    assert adapter_bytes < full_bytes / 4, (adapter_bytes, full_bytes)
    assert not list(model_dir.glob("*.bin"))  # no pickle
    policy, tokenizer = load_policy(model_dir, base_dir=tiny_model_dir)
    base, _ = load_policy(tiny_model_dir)
    trainable = sum(p.numel() for n, p in policy.named_parameters() if "lora_" in n)
    share = trainable / sum(p.numel() for p in base.parameters())
    assert 0 < share < 0.2, share  # rank 8 on a 128-wide model; on a 7B model rank 16 is ~0.6%
    ids = tokenizer(["This movie was great fun"], return_tensors="pt").input_ids
    with torch.no_grad():
        trained = policy(input_ids=ids).logits
        with policy.disable_adapter():  # the adapter off is the SFT model exactly
            assert torch.equal(policy(input_ids=ids).logits, base(input_ids=ids).logits)
    assert not torch.allclose(trained, base(input_ids=ids).logits)


def test_merged_adapter_gives_the_adapters_log_probs(lora_policy, tiny_model_dir, tmp_path):
    from dpolab.train import merge_adapter

    out, _ = lora_policy
    merge_adapter(tiny_model_dir, out / "model", tmp_path / "merged")
    assert not is_adapter(tmp_path / "merged")
    adapter_model, tokenizer = load_policy(out / "model", base_dir=tiny_model_dir)
    merged, _ = load_policy(tmp_path / "merged")
    prompts = [tokenizer(p).input_ids for p in PAIRS["prompt"]]
    completions = [tokenizer(c).input_ids for c in PAIRS["chosen"]]
    assert completion_logps(merged, prompts, completions) == pytest.approx(
        completion_logps(adapter_model, prompts, completions), abs=1e-4
    )


def test_sft_with_lora_keeps_the_adapter_and_merges_it(tiny_model_dir, tmp_path):
    texts = pd.DataFrame({"text": ["a good movie indeed", "bad film really", "what a wonderful thing", "never again"]})
    cfg = SFTSettings(
        max_steps=2,
        batch_size=4,
        gradient_accumulation_steps=1,
        learning_rate=1e-3,
        warmup_steps=0,
        max_length=32,
        logging_steps=1,
        seed=0,
    )
    run_sft(
        tiny_model_dir,
        texts,
        cfg,
        tmp_path,
        use_cpu=True,
        mlflow_active=False,
        peft=PeftSettings(r=4, lora_dropout=0.0, sft="lora"),
    )
    assert is_adapter(tmp_path / "adapter") and not is_adapter(tmp_path / "model")
    merged, tokenizer = load_policy(tmp_path / "model")
    with_adapter, _ = load_policy(tmp_path / "adapter", base_dir=tiny_model_dir)
    ids = tokenizer(["a good movie"], return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, with_adapter(input_ids=ids).logits, atol=1e-4)


@pytest.mark.parametrize("variant", ["kto", "orpo"])
def test_rule_variants_train_adapters_too(variant, tiny_model_dir, tmp_path):
    cfg = DPOSettings(
        max_steps=1,
        batch_size=4,
        gradient_accumulation_steps=1,
        learning_rate=1e-3,
        warmup_steps=0,
        max_length=32,
        logging_steps=1,
    )
    common = dict(cfg=cfg, beta=0.1, seed=0, out_dir=tmp_path, use_cpu=True, mlflow_active=False, peft=LORA)
    if variant == "kto":
        from dpolab.unpaired import unpair

        run_kto(
            tiny_model_dir,
            unpair(PAIRS, examples_per_pair="both", seed=0),
            desirable_weight=1.0,
            undesirable_weight=1.0,
            **common,
        )
    else:
        run_orpo(tiny_model_dir, PAIRS, **common)
    assert is_adapter(tmp_path / "model")
