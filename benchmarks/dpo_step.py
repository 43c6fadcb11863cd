"""The DPO job's training loop, the previous way against today's, side by side in one process.

Both train the same steps on the same pairs from the same SFT weights, seed and reference
log-probs with RegistryDPOTrainer; only how the policy's log-probs are formed differs:
  baseline: TRL's fused LM head on the padded batch (`grouped_logps=False`, how dpolab did it
            before: every row padded to the longest, the head tiled and recomputed in backward);
  dpolab:   rows of similar length share a forward and the head projects completion positions
            only (`dpolab.train.grouped_completion_logps`).
Prints each side's train seconds, tokens/s and MFU (dpolab.perf, against the matmul peak
measured in this process), the ratio, and the largest difference of the logged losses.

    python benchmarks/dpo_step.py --run results/default          # the default study's SFT model and pairs
    python benchmarks/dpo_step.py                                 # tiny scratch model, synthetic pairs
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import pandas as pd
import torch

from dpolab.models import load_policy
from dpolab.perf import attach_throughput
from dpolab.train import DPOSettings, RegistryDPOTrainer, compute_reference_logps, dpo_args, pairs_dataset


def train(
    model_dir: Path, pairs: pd.DataFrame, reference: pd.DataFrame, cfg: DPOSettings, *, grouped: bool, out: Path
) -> dict:
    model, tokenizer = load_policy(model_dir)
    args = dpo_args(cfg, out, beta=0.1, seed=0, use_cpu=True, mlflow_active=False)
    trainer = RegistryDPOTrainer(
        model=model,
        args=args,
        train_dataset=pairs_dataset(pairs, reference),
        processing_class=tokenizer,
        loss_name="dpo",
        loss_params={},
        grouped_logps=grouped,
    )
    meter = attach_throughput(trainer)
    trainer.train()
    return {**meter.report(), "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h]}


def tiny_inputs(folder: Path) -> tuple[Path, pd.DataFrame]:
    """A tiny scratch Llama (the smoke study's) and 64 synthetic pairs of varied lengths."""
    from dpolab.config import ROOT, read_study
    from dpolab.models import prepare_base_model

    prepare_base_model(read_study(ROOT / "configs" / "smoke.yaml").section("model"), folder)
    words = "the film was good bad long short fine dull great awful".split()
    rng = torch.Generator().manual_seed(0)

    def text(n):
        return " ".join(words[i] for i in torch.randint(len(words), (n,), generator=rng).tolist())

    rows = [
        {"pair_id": i, "prompt": text(3), "chosen": " " + text(4 + i % 9), "rejected": " " + text(2 + i % 13)}
        for i in range(64)
    ]
    return folder, pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a study's results folder (its sft/model and pairs/pairs.parquet)")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (a grid job gets one on a 2-core machine)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="dpolab-dpo-step-"))
    if args.run:
        model_dir, pairs = args.run / "sft" / "model", pd.read_parquet(args.run / "pairs" / "pairs.parquet")
    else:
        model_dir, pairs = tiny_inputs(work / "tiny")
    cfg = DPOSettings(
        max_steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=1e-4,
        max_length=args.max_length,
        warmup_steps=0,
        logging_steps=1,
        gradient_accumulation_steps=1,
    )
    reference = compute_reference_logps(model_dir, pairs, cfg, work / "reference", use_cpu=True)
    sides = {
        name: train(model_dir, pairs, reference, cfg, grouped=grouped, out=work / name)
        for name, grouped in (("baseline (fused head, padded)", False), ("dpolab (length groups, plain head)", True))
    }
    for name, side in sides.items():
        print(
            f"{name:36s} train {side['perf/train_seconds']:7.1f} s  {side['perf/tokens_per_s']:7.1f} tokens/s  "
            f"MFU {side['perf/mfu']:.3f}  (peak {side['perf/matmul_peak_gflops']:.0f} GFLOP/s)"
        )
    baseline, ours = sides.values()
    difference = max(abs(a - b) for a, b in zip(baseline["losses"], ours["losses"]))
    print(f"time ratio dpolab / baseline: {ours['perf/train_seconds'] / baseline['perf/train_seconds']:.2f}")
    print(f"largest difference of the {len(ours['losses'])} logged losses: {difference:.2e}")
    print(json.dumps({"baseline": baseline, "dpolab": ours, "loss_difference": difference}, indent=None)[:2000])


if __name__ == "__main__":
    main()
