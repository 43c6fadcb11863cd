# One job per policy: judges load once, then every temperature is evaluated. No language model
# loads here: the samples carry their policy and reference log-probs (the generate job).
rule evaluate:
    input:
        unpack(judge_inputs),
        study_run=STUDY_RUN,
        prompts=f"{STUDY}/data/prompts_test.parquet",
        samples=expand(f"{STUDY}/generate/{{{{policy}}}}/temp~{{temperature}}/samples.jsonl", temperature=TEMPERATURES),
        sft_samples=expand(f"{STUDY}/generate/sft/temp~{{temperature}}/samples.jsonl", temperature=TEMPERATURES),
    output:
        metrics=expand(f"{STUDY}/evaluate/{{{{policy}}}}/temp~{{temperature}}/metrics.json", temperature=TEMPERATURES),
        scored=expand(f"{STUDY}/evaluate/{{{{policy}}}}/temp~{{temperature}}/scored.parquet", temperature=TEMPERATURES),
    log:
        f"{STUDY}/logs/evaluate/{{policy}}.log",
    benchmark:
        f"{STUDY}/benchmarks/evaluate/{{policy}}.tsv"
    threads: 1
    resources:
        **resources_for("evaluate"),
    script:
        "../scripts/evaluate.py"
