"""vLLM engine start-up with a cold cache (baseline: a new VLLM_CACHE_ROOT per engine, as
when every job had its own cache folder) against the study's shared cache (dpolab: one
results/<study>/vllm-cache, so vLLM's model-class inspection, which it runs in a subprocess
that imports vLLM again, is cached after the first engine). Each start runs in a fresh
process, alternating baseline and dpolab; CPU seconds are the child's user+system time.

    OMP_NUM_THREADS=1 python benchmarks/vllm_engine_start.py MODEL_DIR [repeats]
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

START = (
    "from dpolab.generate import vllm_engine; import sys; "
    "vllm_engine(sys.argv[1], max_model_len=72, seed=0, cache_dir=sys.argv[2])"
)


def start(model_dir: str, cache_dir: Path) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", START, model_dir, str(cache_dir)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter() - began, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(model_dir: str, repeats: int = 3) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        shared = Path(tmp) / "study-cache"
        start(model_dir, shared)  # the study's first engine fills the shared cache
        results = {"baseline (cold cache)": [], "dpolab (study cache)": []}
        for i in range(repeats):
            results["baseline (cold cache)"].append(start(model_dir, Path(tmp) / f"cold-{i}"))
            results["dpolab (study cache)"].append(start(model_dir, shared))
    means = {}
    for name, runs in results.items():
        wall = sum(r[0] for r in runs) / len(runs)
        cpu = sum(r[1] for r in runs) / len(runs)
        means[name] = (wall, cpu)
        print(f"{name:24s} engine start: {wall:7.2f} s wall, {cpu:7.2f} CPU-s (mean of {len(runs)})")
    (bw, bc), (dw, dc) = means.values()
    print(f"ratio baseline/dpolab: {bw / dw:.2f}x wall, {bc / dc:.2f}x CPU")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3)
