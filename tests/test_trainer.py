"""The DPO jobs train with exactly the registry's functions: the trainer's first-step loss
equals losses.compute() on the same batch, and no reference model is loaded."""

import pandas as pd
import pytest
import torch

from dpolab import losses
from dpolab.evaluate import completion_logps
from dpolab.models import load_policy
from dpolab.train import DPOSettings, SFTSettings, RegistryDPOTrainer, compute_reference_logps, dpo_args, pairs_dataset

PAIRS = pd.DataFrame({
    "pair_id": range(6),
    "prompt": ["This movie was", "I saw it", "The plot", "Acting is", "What a", "Never again"],
    "chosen": [" great fun", " and loved it", " is brilliant", " superb here", " wonderful film", " was I so happy"],
    "rejected": [" awful", " and hated every minute", " is dull", " bad", " mess", " will I watch this"],
})
CFG = DPOSettings(max_steps=1, batch_size=6, gradient_accumulation_steps=1, learning_rate=1e-3,
                  warmup_steps=0, max_length=32, logging_steps=1)


@pytest.fixture(scope="module")
def reference(tiny_model_dir, tmp_path_factory):
    return compute_reference_logps(tiny_model_dir, PAIRS, CFG, tmp_path_factory.mktemp("ref"), use_cpu=True)


def test_reference_logps_match_an_independent_forward(tiny_model_dir, reference):
    model, tokenizer = load_policy(tiny_model_dir)
    prompt_ids = [tokenizer(p).input_ids for p in PAIRS["prompt"]]
    # TRL appends EOS to each completion before tokenising
    chosen_ids = [tokenizer(p + c + tokenizer.eos_token).input_ids[len(q):] for p, c, q in zip(PAIRS["prompt"], PAIRS["chosen"], prompt_ids)]
    expected = completion_logps(model, prompt_ids, chosen_ids)
    assert reference["ref_chosen_logps"].tolist() == pytest.approx(expected.tolist(), abs=1e-3)
    assert (reference["chosen_tokens"] == [len(c) for c in chosen_ids]).all()


@pytest.mark.parametrize("loss_name, params, beta", [
    ("dpo", {}, 0.1), ("ipo", {}, 0.5), ("cdpo", {"label_smoothing": 0.2}, 0.1),
    ("rdpo", {"alpha": 0.05}, 0.1), ("simpo", {"gamma": 0.5}, 2.0), ("dpo_norm", {}, 0.5),
])
def test_first_step_loss_equals_registry(tiny_model_dir, reference, tmp_path, loss_name, params, beta):
    model, tokenizer = load_policy(tiny_model_dir)
    args = dpo_args(CFG, tmp_path, beta=beta, seed=0, use_cpu=True, mlflow_active=False)
    trainer = RegistryDPOTrainer(model=model, args=args, train_dataset=pairs_dataset(PAIRS, reference),
                                 processing_class=tokenizer, loss_name=loss_name, loss_params=params)
    assert trainer.ref_model is None
    # The first step's batch is the whole dataset (batch_size = 6 pairs): score it independently first.
    data = trainer.train_dataset
    with torch.no_grad():
        fresh, _ = load_policy(tiny_model_dir)
        chosen = completion_logps(fresh, data["prompt_ids"], data["chosen_ids"])
        rejected = completion_logps(fresh, data["prompt_ids"], data["rejected_ids"])
    expected = losses.compute(loss_name, torch.tensor(chosen), torch.tensor(rejected),
                              torch.tensor(data["ref_chosen_logps"]), torch.tensor(data["ref_rejected_logps"]),
                              beta=beta, **params,
                              chosen_lengths=torch.tensor([len(c) for c in data["chosen_ids"]]),
                              rejected_lengths=torch.tensor([len(r) for r in data["rejected_ids"]])).mean().item()
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry][0]["loss"]
    assert logged == pytest.approx(expected, rel=1e-4, abs=1e-5)
    if loss_name == "dpo":  # the policy is the reference at step 0
        assert logged == pytest.approx(torch.log(torch.tensor(2.0)).item(), abs=1e-4)


def test_settings_name_the_bad_field():
    with pytest.raises(ValueError, match=r"dpo\.learning_rate: must be a positive number, got 0"):
        DPOSettings(max_steps=1, batch_size=1, gradient_accumulation_steps=1, learning_rate=0,
                    warmup_steps=0, max_length=8, logging_steps=1)
    assert SFTSettings(max_steps=1, batch_size=1, learning_rate=1e-5, warmup_steps=0, max_length=8,
                       logging_steps=1, seed=0).seed == 0
    with pytest.raises(TypeError, match="max_stepz"):
        DPOSettings(max_stepz=1)
