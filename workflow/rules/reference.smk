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
    threads: stage_threads()
    # Every DPO job waits for this one, and it takes every core: first in line when the pairs
    # are ready, before KTO and ORPO (which do not need it) take a core each.
    priority: 50
    resources:
        **resources_for("reference"),
    script:
        "../scripts/reference.py"
