"""The machine's matmul peak, the denominator of every training job's MFU (dpolab.perf).

Times a large square float32 matmul with 1 thread and with every core, the same measurement a
training job makes in-process before it trains (there with the job's own threads and whatever
else runs beside it). On a quiet machine the figures here are the ceiling; a job's own figure,
logged as perf/matmul_peak_gflops, is what it could get where and when it ran.

    python benchmarks/matmul_peak.py
"""

from __future__ import annotations

import os

from dpolab.perf import matmul_peak_gflops

if __name__ == "__main__":
    cores = os.cpu_count() or 1
    for threads in sorted({1, cores}):
        for dtype in ("float32", "bfloat16"):
            print(
                f"{threads} thread(s) {dtype:9s} {matmul_peak_gflops(threads, dtype=dtype, seconds=2.0):8.1f} GFLOP/s"
            )
