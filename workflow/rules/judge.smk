rule judge:
    input:
        study_run=STUDY_RUN,
        reviews=f"{STUDY}/data/reviews.parquet",
    output:
        judge=directory(f"{STUDY}/judge/gold"),
        accuracy=f"{STUDY}/judge/accuracy.json",
    log:
        f"{STUDY}/logs/judge.log",
    benchmark:
        f"{STUDY}/benchmarks/judge.tsv"
    resources:
        **resources_for("judge"),
    script:
        "../scripts/judge.py"
