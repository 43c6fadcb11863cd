rule data:
    input:
        STUDY_RUN,
    output:
        reviews=f"{STUDY}/data/reviews.parquet",
        prompts_train=f"{STUDY}/data/prompts_train.parquet",
        prompts_test=f"{STUDY}/data/prompts_test.parquet",
        sft_train=f"{STUDY}/data/sft_train.parquet",
        sft_eval=f"{STUDY}/data/sft_eval.parquet",
        card=f"{STUDY}/data/data_card.json",
    log:
        f"{STUDY}/logs/data.log",
    benchmark:
        f"{STUDY}/benchmarks/data.tsv"
    resources:
        **resources_for("data"),
    script:
        "../scripts/data.py"
