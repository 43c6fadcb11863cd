"""LoRA DPO against full fine-tuning DPO on the default study's model, side by side in one process.

Both train the same steps on the same pairs from the same SFT weights, seed and shared reference
log-probs with the dpo rule's own function (dpolab.train.run_dpo); only `peft` differs:
  baseline: full fine-tuning (every weight, AdamW over all of them);
  LoRA:     an adapter (PEFT, `--rank`, every linear layer but the LM head) on the frozen model.
Prints each side's seconds per step, tokens/s (dpolab.perf), the trainable-parameter share, the
saved policy's size, the loss at step 0 (log 2 for both: the policy starts as the reference) and
the ratio of step times.

    python benchmarks/lora_dpo.py                        # SmolLM2-135M (the default study's), synthetic pairs
    python benchmarks/lora_dpo.py --run results/default  # a study's SFT model and pairs
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import pandas as pd
import torch

from dpolab.models import load_policy
from dpolab.settings import PeftSettings
from dpolab.train import DPOSettings, compute_reference_logps, run_dpo


def default_model(folder: Path) -> Path:
    from dpolab.config import ROOT, read_study
    from dpolab.models import prepare_base_model

    prepare_base_model(read_study(ROOT / "configs" / "default.yaml", check_environment=False).section("model"), folder)
    return folder


def synthetic_pairs(n: int = 96) -> pd.DataFrame:
    words = "the film was good bad long short fine dull great awful plot acting story ending".split()
    rng = torch.Generator().manual_seed(0)

    def text(k):
        return " ".join(words[i] for i in torch.randint(len(words), (k,), generator=rng).tolist())

    return pd.DataFrame(
        [
            {"pair_id": i, "prompt": text(4), "chosen": " " + text(6 + i % 11), "rejected": " " + text(4 + i % 13)}
            for i in range(n)
        ]
    )


def side(name: str, model_dir: Path, pairs, reference, meta, cfg, peft, out: Path) -> dict:
    run_dpo(
        model_dir,
        pairs,
        reference,
        meta,
        cfg,
        loss_name="dpo",
        loss_params={},
        beta=0.1,
        seed=0,
        out_dir=out,
        use_cpu=True,
        mlflow_active=False,
        peft=peft,
    )
    log = json.loads((out / "train_log.json").read_text())
    perf = next(entry for entry in log if "perf/train_seconds" in entry)
    losses = [entry["loss"] for entry in log if "loss" in entry]
    saved = sum(p.stat().st_size for p in (out / "model").glob("*.safetensors"))
    if peft is None:
        trainable = None
    else:
        from safetensors import safe_open

        with safe_open(str(out / "model" / "adapter_model.safetensors"), "pt") as handle:
            trainable = sum(math.prod(handle.get_slice(key).get_shape()) for key in handle.keys())
    return {
        "side": name,
        "seconds_per_step": perf["perf/train_seconds"] / cfg.max_steps,
        "tokens_per_s": perf["perf/tokens_per_s"],
        "mfu": perf["perf/mfu"],
        "trainable": trainable,
        "saved_mb": saved / 2**20,
        "loss_step0": losses[0],
        "loss_last": losses[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a study's results folder (its sft/model and pairs/pairs.parquet)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (a grid job gets one on a 2-core machine)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="dpolab-lora-dpo-"))
    if args.run:
        model_dir, pairs = args.run / "sft" / "model", pd.read_parquet(args.run / "pairs" / "pairs.parquet")
    else:
        model_dir, pairs = default_model(work / "base"), synthetic_pairs()
    cfg = DPOSettings(
        max_steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=5e-6,
        max_length=args.max_length,
        warmup_steps=0,
        logging_steps=1,
        gradient_accumulation_steps=1,
    )
    reference = compute_reference_logps(model_dir, pairs, cfg, work / "reference", use_cpu=True)
    meta = json.loads((work / "reference" / "meta.json").read_text())
    total = sum(p.numel() for p in load_policy(model_dir)[0].parameters())
    rows = [
        side("full fine-tuning (baseline)", model_dir, pairs, reference, meta, cfg, None, work / "full"),
        side(
            f"LoRA r={args.rank}, all-linear",
            model_dir,
            pairs,
            reference,
            meta,
            cfg,
            PeftSettings(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0),
            work / "lora",
        ),
    ]
    print(
        f"model: {model_dir} ({total / 1e6:.1f}M parameters), {args.steps} steps of {args.batch_size} pairs, "
        f"max_length {args.max_length}, {args.threads} thread(s)"
    )
    print(
        f"{'side':<32} {'s/step':>7} {'tokens/s':>9} {'MFU':>6} {'trainable':>16} "
        f"{'saved MB':>9} {'loss@0':>8} {'log 2 diff':>10}"
    )
    for row in rows:
        share = "all" if row["trainable"] is None else f"{row['trainable'] / 1e6:.2f}M ({row['trainable'] / total:.2%})"
        print(
            f"{row['side']:<32} {row['seconds_per_step']:>7.2f} {row['tokens_per_s']:>9.0f} "
            f"{row['mfu']:>6.2f} {share:>16} "
            f"{row['saved_mb']:>9.1f} {row['loss_step0']:>8.5f} {row['loss_step0'] - math.log(2):>10.1e}"
        )
    print(f"LoRA / full step time: {rows[1]['seconds_per_step'] / rows[0]['seconds_per_step']:.2f}")


if __name__ == "__main__":
    main()
