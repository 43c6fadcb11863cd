"""Training efficiency figures (dpolab.perf): tokens counted from the batches a trainer trains
on, model FLOPs by the PaLM accounting, and the measured matmul peak."""

import pytest
import torch

from dpolab import perf
from dpolab.models import load_policy


def test_trained_tokens_read_each_trainers_batches():
    ones = torch.ones(2, 3, dtype=torch.long)
    padded = torch.tensor([[1, 1, 1], [1, 0, 0]])
    assert perf.trained_tokens({"input_ids": ones, "attention_mask": padded}) == (4, 2)  # SFT, DPO, KTO
    assert perf.trained_tokens(
        {"chosen_attention_mask": ones, "rejected_attention_mask": padded, "prompt_attention_mask": ones}
    ) == (10, 4)  # ORPO: the prompt is inside both
    flat = {"input_ids": torch.ones(1, 7, dtype=torch.long), "position_ids": torch.tensor([[0, 1, 2, 0, 1, 0, 1]])}
    assert perf.trained_tokens(flat) == (7, 3)  # padding-free SFT: three sequences in one row
    assert perf.trained_tokens({"input_ids": ones}) == (0, 0)


def test_model_flops_per_token_is_six_n_plus_attention(tiny_model_dir):
    model, _ = load_policy(tiny_model_dir)
    config = model.config
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied: counted once
    parameters = sum(p.numel() for p in model.parameters())
    expected = 6 * parameters + 12 * config.num_hidden_layers * config.hidden_size * 10
    assert perf.model_flops_per_token(model, 10) == pytest.approx(expected)


def test_matmul_peak_is_measured_and_leaves_the_thread_setting_alone():
    threads = torch.get_num_threads()
    peak = perf.matmul_peak_gflops(1, size=256, seconds=0.2)
    assert peak > 0.1  # GFLOP/s: any machine that runs the suite does more than 0.1
    assert torch.get_num_threads() == threads


def test_throughput_report_arithmetic():
    meter = perf.Throughput(peak_gflops=100.0, tokens=1000, seconds=2.0, flops_per_token=1e8)
    report = meter.report()
    assert report["perf/tokens_per_s"] == 500.0
    assert report["perf/model_gflops_per_s"] == pytest.approx(50.0)
    assert report["perf/mfu"] == pytest.approx(0.5)


def test_a_training_job_logs_its_tokens_and_mfu(tiny_model_dir, tmp_path):
    import pandas as pd

    from dpolab.train import DPOSettings, compute_reference_logps, run_dpo

    pairs = pd.DataFrame(
        {
            "pair_id": range(4),
            "prompt": ["A film", "The plot", "I saw", "It was"],
            "chosen": [" good", " fine and fun", " it twice", " great"],
            "rejected": [" bad", " dull", " nothing at all here", " awful"],
        }
    )
    cfg = DPOSettings(
        max_steps=2,
        batch_size=2,
        gradient_accumulation_steps=1,
        learning_rate=1e-3,
        warmup_steps=0,
        max_length=32,
        logging_steps=1,
    )
    reference = compute_reference_logps(tiny_model_dir, pairs, cfg, tmp_path / "reference", use_cpu=True)
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
        out_dir=tmp_path / "run",
        use_cpu=True,
        mlflow_active=False,
    )
    import json

    history = json.loads((tmp_path / "run" / "train_log.json").read_text())
    figures = [entry for entry in history if "perf/mfu" in entry][-1]
    # TRL's own running count of the DPO batches' tokens agrees with ours
    assert figures["perf/trained_tokens"] == max(e["num_tokens"] for e in history if "num_tokens" in e) > 0
    assert 0 < figures["perf/mfu"] < 1
    assert figures["perf/tokens_per_s"] == pytest.approx(figures["perf/trained_tokens"] / figures["perf/train_seconds"])
