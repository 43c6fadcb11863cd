"""benchmarks/gpu_check.py, the check for a lent GPU machine, run here on the CPU at toy sizes:
`--prepare` writes the inputs (the smoke model's config and tokenizer, synthetic data), then the
check reads them back and runs every part (the project's run_sft, compute_reference_logps, run_dpo full and
LoRA, TransformersSampler, a batched generate). Only the smoke model, to stay under a minute; the
default model's path (SmolLM2's architecture from its config) is the same code with another folder."""

import json
import math
import os
import subprocess
import sys

from dpolab.config import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
PARTS = ("sft", "reference", "dpo_full", "dpo_lora", "generate_sampler", "generate_batched")


def run(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done.stdout


def test_prepare_then_the_quick_cpu_check_reports_every_part(tmp_path):
    prepared, out = tmp_path / "prepared", tmp_path / "results.json"
    # --prepare with --device: prepare, then run on the folder just written (one process: one import of TRL)
    printed = run(
        "--prepare", str(prepared), "--quick", "--device", "cpu", "--models", "smoke", "--out", str(out), cwd=tmp_path
    )
    assert "well under the 64 MiB" in printed
    manifest = json.loads((prepared / "manifest.json").read_text())
    assert list(manifest["models"]) == ["smoke"]
    assert not list(prepared.rglob("*.safetensors"))  # configs and tokenizers travel, never weights
    assert (prepared / "pairs.parquet").is_file() and (prepared / "sft_texts.parquet").is_file()
    result = json.loads(out.read_text())
    rows = {row["part"]: row for row in result["rows"]}
    assert sorted(rows) == sorted(PARTS) and result["failed"] == []
    for part in PARTS:
        assert rows[part]["tokens_per_s"] > 0, rows[part]
        assert rows[part]["peak_mem_gib"] > 0 and rows[part]["wall_s"] > 0
        assert any(line.startswith(part) for line in printed.splitlines()), part  # a row of the printed table
    for part in ("sft", "dpo_full", "dpo_lora"):
        assert 0 < rows[part]["mfu"] and rows[part]["mfu_perf"] == rows[part]["mfu"]  # cpu: both against perf's peak
    for part in ("dpo_full", "dpo_lora"):  # the policy starts as the shared reference: every log-ratio is 0
        assert math.isclose(rows[part]["step0_loss"], math.log(2), abs_tol=1e-4), rows[part]
    assert rows["dpo_full"]["trainable_share"] == 1.0
    assert 0 < rows["dpo_lora"]["trainable_share"] < 0.1 and rows["dpo_lora"]["lora"].startswith("yes")
    assert rows["generate_sampler"]["generated_tokens"] > 0 and rows["generate_batched"]["generated_tokens"] > 0
    assert "0 part(s) failed" in printed
