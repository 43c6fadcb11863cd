"""Training (dpolab.train): the DPO jobs train with exactly the registry's functions (the trainer's
first-step loss equals losses.compute() on the same batch, and no reference model is loaded),
length-grouped log-probs, padding-free SFT, checkpoints at steps, and TRL's KTO and ORPO trainers
held to the papers' formulas on fixed batches. (LoRA: test_train_lora.py.)"""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from dpolab import losses
from dpolab.models import completion_logps, load_policy
from dpolab.train import (
    DPOSettings,
    RegistryDPOTrainer,
    SFTSettings,
    compute_reference_logps,
    dpo_args,
    pairs_dataset,
    run_dpo,
    run_kto,
    run_orpo,
)
from dpolab.unpaired import unpair
from helpers.examples import PAIRS

CFG = DPOSettings(
    max_steps=1,
    batch_size=6,
    gradient_accumulation_steps=1,
    learning_rate=1e-3,
    warmup_steps=0,
    max_length=32,
    logging_steps=1,
)


@pytest.fixture(scope="module")
def reference(tiny_model_dir, tmp_path_factory):
    return compute_reference_logps(tiny_model_dir, PAIRS, CFG, tmp_path_factory.mktemp("ref"), use_cpu=True)


def test_reference_logps_match_an_independent_forward(tiny_model_dir, reference):
    model, tokenizer = load_policy(tiny_model_dir)
    prompt_ids = [tokenizer(p).input_ids for p in PAIRS["prompt"]]
    # TRL appends EOS to each completion before tokenising
    chosen_ids = [
        tokenizer(p + c + tokenizer.eos_token).input_ids[len(q) :]
        for p, c, q in zip(PAIRS["prompt"], PAIRS["chosen"], prompt_ids)
    ]
    expected = completion_logps(model, prompt_ids, chosen_ids)
    assert reference["ref_chosen_logps"].tolist() == pytest.approx(expected.tolist(), abs=1e-3)
    assert (reference["chosen_tokens"] == [len(c) for c in chosen_ids]).all()


@pytest.mark.parametrize(
    "loss_name, params, beta",
    [
        ("dpo", {}, 0.1),
        ("ipo", {}, 0.5),
        ("cdpo", {"label_smoothing": 0.2}, 0.1),
        ("rdpo", {"alpha": 0.05}, 0.1),
        ("simpo", {"gamma": 0.5}, 2.0),
        ("dpo_norm", {}, 0.5),
    ],
)
def test_first_step_loss_equals_registry(tiny_model_dir, reference, tmp_path, loss_name, params, beta):
    model, tokenizer = load_policy(tiny_model_dir)
    args = dpo_args(CFG, tmp_path, beta=beta, seed=0, use_cpu=True, mlflow_active=False)
    trainer = RegistryDPOTrainer(
        model=model,
        args=args,
        train_dataset=pairs_dataset(PAIRS, reference),
        processing_class=tokenizer,
        loss_name=loss_name,
        loss_params=params,
    )
    assert trainer.ref_model is None
    # The first step's batch is the whole dataset (batch_size = 6 pairs): score it independently first.
    data = trainer.train_dataset
    with torch.no_grad():
        fresh, _ = load_policy(tiny_model_dir)
        chosen = completion_logps(fresh, data["prompt_ids"], data["chosen_ids"])
        rejected = completion_logps(fresh, data["prompt_ids"], data["rejected_ids"])
    expected = (
        losses.compute(
            loss_name,
            torch.tensor(chosen),
            torch.tensor(rejected),
            torch.tensor(data["ref_chosen_logps"]),
            torch.tensor(data["ref_rejected_logps"]),
            beta=beta,
            **params,
            chosen_lengths=torch.tensor([len(c) for c in data["chosen_ids"]]),
            rejected_lengths=torch.tensor([len(r) for r in data["rejected_ids"]]),
        )
        .mean()
        .item()
    )
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry][0]["loss"]
    assert logged == pytest.approx(expected, rel=1e-4, abs=1e-5)
    if loss_name == "dpo":  # the policy is the reference at step 0
        assert logged == pytest.approx(torch.log(torch.tensor(2.0)).item(), abs=1e-4)


def test_settings_name_the_bad_field():
    with pytest.raises(ValueError, match=r"dpo\.learning_rate: must be a positive number, got 0"):
        DPOSettings(
            max_steps=1,
            batch_size=1,
            gradient_accumulation_steps=1,
            learning_rate=0,
            warmup_steps=0,
            max_length=8,
            logging_steps=1,
        )
    assert (
        SFTSettings(
            max_steps=1, batch_size=1, learning_rate=1e-5, warmup_steps=0, max_length=8, logging_steps=1, seed=0
        ).seed
        == 0
    )
    with pytest.raises(TypeError, match="max_stepz"):
        DPOSettings(max_stepz=1)


def test_length_groups_cover_every_row_once_and_trade_padding_for_calls():
    from dpolab.train import length_groups

    lengths = [5, 40, 6, 41, 5, 39, 7, 42]
    groups = length_groups(lengths, overhead_tokens=16)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    # short rows and long rows do not share a forward: padding 4 short rows to 42 costs more than a call
    assert [sorted(lengths[i] for i in g) for g in groups] == [[5, 5, 6, 7], [39, 40, 41, 42]]
    assert length_groups(lengths, overhead_tokens=10_000) == [sorted(range(8), key=lambda i: (lengths[i], i))]
    assert length_groups([3]) == [[0]]


def test_grouped_logps_equal_the_padded_forward_with_the_same_gradients(tiny_model_dir):
    """Rows of a right-padded batch, as TRL's collator makes them: the grouped, padding-free
    log-probs equal an independent padded forward, and so do their gradients."""
    from dpolab.train import grouped_completion_logps, plain_head

    model, _ = load_policy(tiny_model_dir)
    assert plain_head(model)
    generator = torch.Generator().manual_seed(0)
    prompts = [torch.randint(5, 200, (n,), generator=generator).tolist() for n in (3, 7, 2, 5, 4, 6)]
    completions = [torch.randint(5, 200, (n,), generator=generator).tolist() for n in (20, 2, 9, 1, 14, 3)]
    width = max(len(p) + len(c) for p, c in zip(prompts, completions))
    input_ids = torch.zeros(len(prompts), width, dtype=torch.long)
    attention, completion = torch.zeros_like(input_ids), torch.zeros_like(input_ids)
    for row, (p, c) in enumerate(zip(prompts, completions)):
        input_ids[row, : len(p) + len(c)] = torch.tensor(p + c)
        attention[row, : len(p) + len(c)] = 1
        completion[row, len(p) : len(p) + len(c)] = 1

    grouped = grouped_completion_logps(model, input_ids, attention, completion)
    grouped.sum().backward()
    grouped_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    logits = model(input_ids=input_ids, attention_mask=attention).logits[:, :-1]
    token_logps = torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    padded = (token_logps * completion[:, 1:]).sum(dim=1)
    padded.sum().backward()
    assert grouped.tolist() == pytest.approx(padded.tolist(), abs=1e-4)
    assert grouped.tolist() == pytest.approx(completion_logps(model, prompts, completions).tolist(), abs=1e-4)
    for ours, theirs in zip(grouped_grads, (p.grad for p in model.parameters())):
        torch.testing.assert_close(ours, theirs, rtol=1e-3, atol=1e-5)


def test_grouped_training_follows_trls_fused_head(tiny_model_dir, reference, tmp_path):
    """Three steps each way (grouped_logps True/False) from the same weights: the same losses."""
    cfg = DPOSettings(
        max_steps=3,
        batch_size=2,
        gradient_accumulation_steps=1,
        learning_rate=1e-3,
        warmup_steps=0,
        max_length=32,
        logging_steps=1,
    )
    curves = []
    for grouped in (True, False):
        model, tokenizer = load_policy(tiny_model_dir)
        args = dpo_args(cfg, tmp_path / str(grouped), beta=0.1, seed=0, use_cpu=True, mlflow_active=False)
        trainer = RegistryDPOTrainer(
            model=model,
            args=args,
            train_dataset=pairs_dataset(PAIRS, reference),
            processing_class=tokenizer,
            loss_name="dpo",
            grouped_logps=grouped,
        )
        trainer.train()
        curves.append([entry["loss"] for entry in trainer.state.log_history if "loss" in entry])
    assert len(curves[0]) == 3
    assert curves[0] == pytest.approx(curves[1], abs=1e-5)


def test_sft_is_padding_free_when_nothing_needs_truncating(tiny_model_dir, tmp_path):
    """Short texts train padding-free; a text longer than sft.max_length makes the job fall back
    to padded batches, where TRL truncates it. Both write their figures."""
    import json

    from dpolab.train import run_sft

    short = pd.DataFrame({"text": ["A fine film.", "Bad.", "I watched it twice and would again."] * 2})
    cfg = SFTSettings(
        max_steps=1, batch_size=3, learning_rate=1e-4, warmup_steps=0, max_length=16, logging_steps=1, seed=0
    )
    for name, frame in (("short", short), ("long", pd.concat([short, pd.DataFrame({"text": ["word " * 40]})]))):
        run_sft(tiny_model_dir, frame, cfg, tmp_path / name, use_cpu=True, mlflow_active=False)
        args = json.loads((tmp_path / name / "model" / "training_args.json").read_text())
        assert (args["padding_free"], args["max_length"]) == ((True, None) if name == "short" else (False, 16))
        history = json.loads((tmp_path / name / "train_log.json").read_text())
        assert [e for e in history if "perf/trained_tokens" in e][-1]["perf/trained_tokens"] > 0


def test_training_saves_the_policy_at_each_checkpoint_step(tiny_model_dir, tmp_path):
    pairs = PAIRS.head(4)
    cfg = DPOSettings(
        max_steps=3,
        batch_size=2,
        gradient_accumulation_steps=1,
        learning_rate=1e-2,
        warmup_steps=0,
        max_length=32,
        logging_steps=1,
    )
    reference = compute_reference_logps(tiny_model_dir, pairs, cfg, tmp_path / "ref", use_cpu=True)
    out = tmp_path / "policy"
    run_dpo(
        tiny_model_dir,
        pairs,
        reference,
        {"max_length": 32},
        cfg,
        loss_name="dpo",
        loss_params={},
        beta=0.1,
        seed=0,
        out_dir=out,
        use_cpu=True,
        mlflow_active=False,
        checkpoints=(1, 2),
    )
    assert sorted(p.name for p in out.glob("step~*")) == ["step~1", "step~2"]
    weights = {}
    for name in ("step~1/model", "step~2/model", "model"):
        folder = out / name
        assert (folder / "model.safetensors").is_file() and (folder / "training_args.json").is_file()
        assert not list(folder.glob("*.bin")) and not list(folder.glob("*.pt"))  # no pickle
        model, _ = load_policy(folder)
        weights[name] = model.model.embed_tokens.weight.detach().clone()
    # three different policies: the checkpoints are the weights at their steps, not copies of the end
    assert not np.allclose(weights["step~1/model"], weights["step~2/model"])
    assert not np.allclose(weights["step~2/model"], weights["model"])


# ---- KTO and ORPO (rule variants): TRL's trainers against the papers' formulas ------------------
VARIANT_CFG = DPOSettings(
    max_steps=1,
    batch_size=8,
    gradient_accumulation_steps=1,
    learning_rate=1e-3,
    warmup_steps=0,
    max_length=32,
    logging_steps=1,
)


def test_kto_first_step_is_the_papers_loss_at_the_reference(tiny_model_dir, tmp_path):
    """At step 0 the policy is the reference: every reward r = log pi/ref = 0 and the KL
    estimate z0 = 0, so KTO's value v = sigmoid(beta (r - z0)) = 1/2 for desirable and
    sigmoid(beta (z0 - r)) = 1/2 for undesirable examples; the loss is the batch mean of
    lambda_y (1 - v): with weights 2 and 1 and four examples of each, (4*2*0.5 + 4*1*0.5)/8."""
    examples = unpair(PAIRS.head(4), examples_per_pair="both", seed=0)
    run_kto(
        tiny_model_dir,
        examples,
        VARIANT_CFG,
        beta=0.1,
        desirable_weight=2.0,
        undesirable_weight=1.0,
        seed=0,
        out_dir=tmp_path,
        use_cpu=True,
        mlflow_active=False,
    )
    first = json.loads((tmp_path / "train_log.json").read_text())[0]
    assert first["loss"] == pytest.approx(0.75, abs=1e-6)
    assert first["kl"] == pytest.approx(0.0, abs=1e-6) and first["rewards/chosen"] == pytest.approx(0.0, abs=1e-6)
    assert (tmp_path / "model" / "model.safetensors").exists() and not list(tmp_path.rglob("*.bin"))


def test_orpo_first_step_is_nll_plus_lambda_odds_ratio(tiny_model_dir, tmp_path):
    """One pair per step, so the logged means are the pair's own values: the loss is
    NLL(chosen) - lambda log sigmoid(log odds(y_w) - log odds(y_l)), odds(y) = p/(1-p) with p the
    length-averaged likelihood of the response (Hong et al. 2024, Eqs. 4-7). TRL's NLL term
    averages over the chosen sequence's prompt and response tokens (as its code says), so it
    is taken from the log and the rest of the loss is recomputed from the logged log-probs."""
    cfg = DPOSettings(**{**VARIANT_CFG.__dict__, "batch_size": 1})
    beta = 0.25
    run_orpo(tiny_model_dir, PAIRS.head(1), cfg, beta=beta, seed=0, out_dir=tmp_path, use_cpu=True, mlflow_active=False)
    first = json.loads((tmp_path / "train_log.json").read_text())[0]
    chosen, rejected = (
        torch.tensor(first["logps/chosen"], dtype=torch.float64),
        torch.tensor(first["logps/rejected"], dtype=torch.float64),
    )
    log_odds = (chosen - rejected) - (torch.log1p(-torch.exp(chosen)) - torch.log1p(-torch.exp(rejected)))
    assert first["log_odds_chosen"] == pytest.approx(float(log_odds), rel=1e-4)
    assert first["log_odds_ratio"] == pytest.approx(float(F.logsigmoid(log_odds)), rel=1e-4)
    expected = first["nll_loss"] - beta * float(F.logsigmoid(log_odds))
    assert first["loss"] == pytest.approx(expected, rel=1e-5)
    assert math.isfinite(first["grad_norm"]) and first["grad_norm"] > 0


def test_the_reference_job_writes_the_shared_log_probs_of_every_pair(tiny_model_dir, tmp_path):
    from dpolab.config import ROOT, read_study
    from dpolab.train import make_reference

    study = read_study(ROOT / "configs" / "smoke.yaml", check_environment=False)
    PAIRS.to_parquet(tmp_path / "pairs.parquet")
    reference = make_reference(
        study,
        sft_dir=tiny_model_dir,
        pairs_file=tmp_path / "pairs.parquet",
        logps_file=tmp_path / "reference" / "logps.parquet",
        meta_file=tmp_path / "reference" / "meta.json",
        log=False,
    )
    assert sorted(reference["pair_id"]) == sorted(PAIRS["pair_id"])
    assert (reference[["ref_chosen_logps", "ref_rejected_logps"]] < 0).all().all()
    assert json.loads((tmp_path / "reference" / "meta.json").read_text())
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "reference" / "logps.parquet"), reference)
