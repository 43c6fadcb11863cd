# One job per policy: the engine starts once and samples every configured temperature.
rule generate:
    input:
        study_run=STUDY_RUN,
        model=policy_model_dir,
        prompts=f"{STUDY}/data/prompts_test.parquet",
    output:
        samples=expand(f"{STUDY}/generate/{{{{policy}}}}/temp~{{temperature}}/samples.jsonl", temperature=TEMPERATURES),
    log:
        f"{STUDY}/logs/generate/{{policy}}.log",
    benchmark:
        f"{STUDY}/benchmarks/generate/{{policy}}.tsv"
    threads: heavy_threads()
    resources:
        **resources_for("generate"),
    script:
        "../scripts/generate.py"
