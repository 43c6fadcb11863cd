# One job per policy: the engine starts once, samples every configured temperature with each
# sample's log-prob under the policy, then takes the reference (SFT) weights in place and scores
# the same tokens, so evaluate needs no model for the KL.
rule generate:
    input:
        study_run=STUDY_RUN,
        model=policy_model_dir,
        reference=SFT_MODEL,
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
