# One job per grid point (variant, beta, seed): TRL's DPOTrainer with the registry loss.
rule dpo:
    input:
        study_run=STUDY_RUN,
        sft=f"{STUDY}/sft/model",
        pairs=f"{STUDY}/pairs/pairs.parquet",
        reference=f"{STUDY}/reference/logps.parquet",
        reference_meta=f"{STUDY}/reference/meta.json",
    output:
        model=directory(f"{STUDY}/dpo/variant~{{variant}}/beta~{{beta}}/seed~{{seed}}/model"),
        train_log=f"{STUDY}/dpo/variant~{{variant}}/beta~{{beta}}/seed~{{seed}}/train_log.json",
    log:
        f"{STUDY}/logs/dpo/variant~{{variant}}/beta~{{beta}}/seed~{{seed}}.log",
    benchmark:
        f"{STUDY}/benchmarks/dpo/variant~{{variant}}/beta~{{beta}}/seed~{{seed}}.tsv"
    threads: heavy_threads()
    resources:
        **resources_for("dpo"),
    script:
        "../scripts/dpo.py"
