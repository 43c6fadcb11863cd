"""Training efficiency: tokens per second and model FLOPs utilisation (MFU) of a training job.

MFU = model FLOPs per second / the machine's matmul peak, both in the job's precision and with
the job's threads. Model FLOPs follow the PaLM paper's accounting (Chowdhery et al. 2022, app. B):
6 N per trained token for the weights (forward 2 N, backward 4 N) plus 12 L d T for attention
at sequence length T, counted on the tokens a step trains on (padding excluded). Work a trainer
does besides that (KTO's no-gradient KL forward, recomputation, the optimizer) is overhead by
this definition, as it is in the paper. The peak is measured, not taken from a data sheet:
`matmul_peak_gflops` times a large square matmul in this process, with these threads, so on a
busy machine it reports what the job could get; benchmarks/matmul_peak.py prints the same
figure for a quiet machine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

# Keys of a training batch whose sum is the number of trained (non-padding) tokens: SFT, DPO
# and KTO batches carry `attention_mask` (KTO's no-gradient KL rows are `KL_attention_mask`,
# not counted); ORPO's carry chosen and rejected sequences, each prompt plus response.
TOKEN_MASKS = (("attention_mask",), ("chosen_attention_mask", "rejected_attention_mask"))


def matmul_peak_gflops(
    threads: int | None = None, *, size: int = 2048, seconds: float = 0.5, dtype: str = "float32", device: str = "cpu"
) -> float:
    """The best of repeated `size` x `size` matmuls, in GFLOP/s, with `threads` torch threads
    (the current setting when None); the setting is restored afterwards. On a GPU (`device`
    cuda) in the training's dtype, each timing synchronised."""
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    try:
        a = torch.randn(size, size, dtype=getattr(torch, dtype), device=device)
        b = torch.randn(size, size, dtype=getattr(torch, dtype), device=device)
        a @ b  # warm-up: first-call allocation and kernel selection
        sync()
        best, deadline = 0.0, time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            a @ b
            sync()
            best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
        return best
    finally:
        torch.set_num_threads(previous)


def model_flops_per_token(model, sequence_length: float) -> float:
    """Training FLOPs per token: 6 N + 12 L d T (N: parameters, shared ones counted once; the
    input embedding is a lookup, but a tied one is also the LM head's matmul, so it stays in).
    With frozen weights (a LoRA adapter on a frozen base) the backward pass computes weight
    gradients for the trainable ones only: 4 N + 2 N_trainable + 12 L d T."""
    config = model.config.get_text_config()
    parameters = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    embeddings = model.get_input_embeddings()
    tied = model.get_output_embeddings() is not None and model.get_output_embeddings().weight is embeddings.weight
    if not tied:
        parameters -= embeddings.weight.numel()
        if embeddings.weight.requires_grad:
            trainable -= embeddings.weight.numel()
    return (
        4.0 * parameters
        + 2.0 * min(trainable, parameters)
        + 12.0 * config.num_hidden_layers * config.hidden_size * sequence_length
    )


def trained_tokens(inputs: dict) -> tuple[int, int]:
    """(tokens, sequences) a batch trains on: the sum and row count of its attention masks."""
    for keys in TOKEN_MASKS:
        if all(key in inputs for key in keys):
            return (int(sum(int(inputs[key].sum()) for key in keys)), int(sum(inputs[key].shape[0] for key in keys)))
    if "position_ids" in inputs and "input_ids" in inputs:  # padding-free: one row, positions restart per sequence
        return int(inputs["input_ids"].numel()), int((inputs["position_ids"] == 0).sum())
    return 0, 0


@dataclass
class Throughput:
    """Counts trained tokens and wall time of `trainer.train()`; `report()` gives the figures."""

    peak_gflops: float
    tokens: int = 0
    sequences: int = 0
    seconds: float = 0.0
    flops_per_token: float = 0.0
    _start: float = field(default=0.0, repr=False)

    def report(self) -> dict:
        flops = self.flops_per_token * self.tokens
        achieved = flops / self.seconds / 1e9 if self.seconds else 0.0
        return {
            "perf/trained_tokens": self.tokens,
            "perf/train_seconds": self.seconds,
            "perf/tokens_per_s": self.tokens / self.seconds if self.seconds else 0.0,
            "perf/model_gflops_per_s": achieved,
            "perf/matmul_peak_gflops": self.peak_gflops,
            "perf/mfu": achieved / self.peak_gflops if self.peak_gflops else 0.0,
        }


def attach_throughput(trainer, *, threads: int | None = None) -> Throughput:
    """Measure the job's matmul peak, then count every training batch's tokens and time
    `trainer.train()`. At the end the figures go to the trainer's log history (so to
    train_log.json) and, when a run is active, to MLflow."""
    from transformers import TrainerCallback

    args = trainer.args
    on_gpu = args.device.type == "cuda"
    dtype = "bfloat16" if args.bf16 else "float16" if args.fp16 else "float32"
    # the peak of the arithmetic the training runs: the GPU's in its autocast dtype, or this CPU's fp32
    meter = Throughput(
        peak_gflops=matmul_peak_gflops(
            threads, size=8192 if on_gpu else 2048, dtype=dtype if on_gpu else "float32", device=args.device.type
        )
    )
    step = trainer.training_step

    def counting_step(model, inputs, *args, **kwargs):
        tokens, sequences = trained_tokens(inputs)
        meter.tokens += tokens
        meter.sequences += sequences
        return step(model, inputs, *args, **kwargs)

    class Timer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            meter._start = time.perf_counter()

        def on_train_end(self, args, state, control, model=None, **kwargs):
            meter.seconds = time.perf_counter() - meter._start
            processes = trainer.accelerator.num_processes
            if processes > 1:  # the job's tokens and peak: every process's, summed (a collective: all ranks are here)
                import torch

                counts = torch.tensor(
                    [meter.tokens, meter.sequences], dtype=torch.long, device=trainer.accelerator.device
                )
                meter.tokens, meter.sequences = (int(x) for x in trainer.accelerator.reduce(counts, reduction="sum"))
                meter.peak_gflops *= processes
            length = meter.tokens / meter.sequences if meter.sequences else 0.0
            meter.flops_per_token = model_flops_per_token(model or trainer.model, length)
            figures = meter.report()
            state.log_history.append({**figures, "step": state.global_step})
            try:
                import mlflow
            except ImportError:  # training code used without MLflow (e.g. benchmarks/gpu_check.py)
                return
            if mlflow.active_run() is not None:  # at the last step, as the log history has them
                mlflow.log_metrics(figures, step=state.global_step)

    trainer.training_step = counting_step
    trainer.add_callback(Timer())
    return meter
