rule pairs:
    input:
        study_run=STUDY_RUN,
        sft=f"{STUDY}/sft/model",
        prompts=f"{STUDY}/data/prompts_train.parquet",
        judge=f"{STUDY}/judge/gold",
    output:
        pairs=f"{STUDY}/pairs/pairs.parquet",
        stats=f"{STUDY}/pairs/stats.json",
    log:
        f"{STUDY}/logs/pairs.log",
    benchmark:
        f"{STUDY}/benchmarks/pairs.tsv"
    threads: stage_threads()
    resources:
        **resources_for("pairs"),
    script:
        "../scripts/pairs.py"
