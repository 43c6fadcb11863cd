"""Where a study's wall time goes: Snakemake's benchmark files summed per rule, and each
training job's efficiency (tokens/s and MFU, from the figures dpolab.perf writes into
train_log.json and MLflow).

    python benchmarks/study_time.py results/default
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd


def per_rule(study_dir: Path) -> pd.DataFrame:
    rows = []
    for tsv in sorted((study_dir / "benchmarks").rglob("*.tsv")):
        rule = tsv.relative_to(study_dir / "benchmarks").parts[0].removesuffix(".tsv")
        frame = pd.read_csv(tsv, sep="\t")
        rows.append(
            {"rule": rule, "seconds": float(frame["s"].iloc[-1]), "max_rss_mb": float(frame["max_rss"].iloc[-1])}
        )
    table = (
        pd.DataFrame(rows)
        .groupby("rule")
        .agg(
            jobs=("seconds", "size"),
            seconds=("seconds", "sum"),
            mean_s=("seconds", "mean"),
            max_rss_mb=("max_rss_mb", "max"),
        )
    )
    table["share"] = table["seconds"] / table["seconds"].sum()
    return table.sort_values("seconds", ascending=False)


def training_efficiency(study_dir: Path) -> pd.DataFrame:
    """One row per training job (sft and every policy): its tokens/s and MFU."""
    import json

    rows = []
    for log in sorted(study_dir.glob("sft/train_log.json")) + sorted(study_dir.glob("dpo/*/*/*/train_log.json")):
        figures = [entry for entry in json.loads(log.read_text()) if "perf/mfu" in entry]
        if figures:
            job = "sft" if log.parent.name == "sft" else "/".join(log.parent.relative_to(study_dir / "dpo").parts)
            rows.append(
                {"job": job, **{k.removeprefix("perf/"): v for k, v in figures[-1].items() if k.startswith("perf/")}}
            )
    return pd.DataFrame(rows)


if __name__ == "__main__":
    study = Path(sys.argv[1] if len(sys.argv) > 1 else "results/default")
    table = per_rule(study)
    print(table.round({"seconds": 1, "mean_s": 1, "max_rss_mb": 0, "share": 3}).to_string())
    print(f"job-seconds in all: {table['seconds'].sum():.0f}")
    efficiency = training_efficiency(study)
    if len(efficiency):
        columns = [
            "job",
            "trained_tokens",
            "train_seconds",
            "tokens_per_s",
            "model_gflops_per_s",
            "matmul_peak_gflops",
            "mfu",
        ]
        print()
        print(efficiency[columns].round(3).to_string(index=False))
