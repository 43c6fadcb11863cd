# Reference log-probs for every pair, computed once and read by every DPO job.
rule reference:
    input:
        study_run=STUDY_RUN,
        sft=SFT_MODEL,
        pairs=f"{STUDY}/pairs/pairs.parquet",
    output:
        logps=f"{STUDY}/reference/logps.parquet",
        meta=f"{STUDY}/reference/meta.json",
    log:
        f"{STUDY}/logs/reference.log",
    benchmark:
        f"{STUDY}/benchmarks/reference.tsv"
    # Every DPO job waits for this one: first in line when the pairs are ready.
    priority: 50
    # One core, like a grid job: the other core samples SFT meanwhile (or trains KTO/ORPO), which
    # finishes the study sooner than both cores on this short job while the sampling waits.
    threads: heavy_threads()
    resources:
        **resources_for("reference"),
    script:
        "../scripts/reference.py"
