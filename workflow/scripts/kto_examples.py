import json
from pathlib import Path

import mlflow
import pandas as pd

from dpolab import jobs
from dpolab.unpaired import read_unpaired, unpair, unpaired_stats

study, wildcards = jobs.study_of(snakemake), snakemake.wildcards
settings = study.section("variants")[wildcards.variant]
with jobs.job(snakemake, "kto_examples", params={"variant": settings}):
    if settings.get("unpaired_data") is None:
        examples = unpair(pd.read_parquet(snakemake.input.pairs), examples_per_pair=settings["examples_per_pair"],
                          seed=settings["unpair_seed"])
        source = "pairs"
    else:
        examples = read_unpaired(settings["unpaired_data"], settings["unpaired_split"])
        source = settings["unpaired_data"]
    stats = {"source": source, **unpaired_stats(examples, desirable_weight=settings["desirable_weight"],
                                                 undesirable_weight=settings["undesirable_weight"])}
    if not stats["weighted_ratio_in_recommended_range"]:
        print(f"KTO weights: desirable_weight*n_desirable / (undesirable_weight*n_undesirable) = {stats['weighted_ratio']:.3f}, "
              "outside the KTO paper's recommended [1, 4/3]")
    examples.to_parquet(snakemake.output.examples, index=False)
    Path(snakemake.output.stats).write_text(json.dumps(stats, indent=2))
    mlflow.log_metrics({k: float(v) for k, v in stats.items() if isinstance(v, (int, float))})
    mlflow.log_dict(stats, "unpaired_stats.json")
