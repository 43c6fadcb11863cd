"""Shared reference log-probs vs TRL's own reference model, side by side in one process.

Trains the same DPO steps on the same pairs twice, from the same SFT weights and seed:
  baseline: trl.DPOTrainer, loss_type="sigmoid", the reference model loaded and run each step;
  dpolab:   RegistryDPOTrainer (loss "dpo") reading reference log-probs computed once.
Prints the step-time ratio (baseline / dpolab) and the largest per-step loss difference.

    python benchmarks/shared_reference.py --model results/default/sft/model --pairs results/default/pairs/pairs.parquet
    python benchmarks/shared_reference.py            # tiny scratch model and synthetic pairs
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import pandas as pd
import torch
from transformers import TrainerCallback
from trl import DPOTrainer

from dpolab.models import load_policy
from dpolab.train import DPOSettings, RegistryDPOTrainer, compute_reference_logps, dpo_args, pairs_dataset


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times, self._start = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def synthetic_pairs(n: int) -> pd.DataFrame:
    words = ["great", "awful", "film", "plot", "acting", "boring", "wonderful", "mess", "loved", "hated"]
    return pd.DataFrame(
        {
            "pair_id": range(n),
            "prompt": [f"This movie {words[i % 10]}" for i in range(n)],
            "chosen": [" " + " ".join(words[(i + k) % 10] for k in range(6 + i % 5)) for i in range(n)],
            "rejected": [" " + " ".join(words[(i * 3 + k) % 10] for k in range(4 + i % 7)) for i in range(n)],
        }
    )


def train(kind: str, model_dir: Path, pairs: pd.DataFrame, reference: pd.DataFrame | None, cfg: DPOSettings, out: Path):
    model, tokenizer = load_policy(model_dir)
    timer = StepTimer()
    args = dpo_args(cfg, out / kind, beta=0.1, seed=0, use_cpu=True, mlflow_active=False)
    if kind == "trl_reference_model":
        args.precompute_ref_log_probs = False
        ref_model, _ = load_policy(model_dir)
        trainer = DPOTrainer(
            model=model,
            ref_model=ref_model,
            args=args,
            train_dataset=pairs_dataset(pairs),
            processing_class=tokenizer,
            callbacks=[timer],
        )
    else:
        trainer = RegistryDPOTrainer(
            model=model,
            args=args,
            train_dataset=pairs_dataset(pairs, reference),
            processing_class=tokenizer,
            callbacks=[timer],
            loss_name="dpo",
        )
    trainer.train()
    step_losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return timer.times, step_losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="SFT model folder (default: a tiny scratch model)")
    parser.add_argument("--pairs", type=Path, help="pairs.parquet (default: synthetic pairs)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = DPOSettings(
        max_steps=args.steps,
        batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        learning_rate=1e-5,
        warmup_steps=0,
        max_length=args.max_length,
        logging_steps=1,
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = args.model
        if model_dir is None:
            from dpolab.config import ROOT, read_study
            from dpolab.models import prepare_base_model

            model_dir = tmp / "tiny"
            prepare_base_model(read_study(ROOT / "configs" / "smoke.yaml").section("model"), model_dir)
        pairs = pd.read_parquet(args.pairs) if args.pairs else synthetic_pairs(args.steps * args.batch_size)
        pairs = pairs.head(args.steps * args.batch_size)
        start = time.perf_counter()
        reference = compute_reference_logps(model_dir, pairs, cfg, tmp / "reference", use_cpu=True)
        precompute_s = time.perf_counter() - start
        base_times, base_losses = train("trl_reference_model", model_dir, pairs, None, cfg, tmp)
        ours_times, our_losses = train("shared_reference_logps", model_dir, pairs, reference, cfg, tmp)
    # the first step includes warm-up; compare the rest
    base_step, our_step = sum(base_times[1:]) / (len(base_times) - 1), sum(ours_times[1:]) / (len(ours_times) - 1)
    print(
        f"model: {model_dir}  pairs: {len(pairs)}  steps: {args.steps}  batch: {args.batch_size}  "
        f"threads: {args.threads}"
    )
    print(f"baseline (TRL DPOTrainer + reference model) step: {base_step:.3f} s")
    print(f"dpolab (shared reference log-probs)        step: {our_step:.3f} s")
    print(f"one-off reference precompute for all pairs: {precompute_s:.2f} s")
    print(f"step-time ratio baseline/dpolab: {base_step / our_step:.2f}x")
    print(f"largest per-step loss difference: {max(abs(a - b) for a, b in zip(base_losses, our_losses)):.2e}")


if __name__ == "__main__":
    main()
