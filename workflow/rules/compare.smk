# Study-wide comparison: pairwise LLM judges (one job per judge, the engine starts once for
# every policy and temperature), then win rates, LC win rates and the length analysis.


rule pairwise_judge:
    input:
        study_run=STUDY_RUN,
        samples=[f"{STUDY}/generate/{p}/temp~{t}/samples.jsonl" for p, t in POLICY_TEMPERATURES],
        prompts=f"{STUDY}/data/prompts_test.parquet",
        model=pairwise_judge_model,
    output:
        verdicts=f"{STUDY}/compare/pairwise/{{judge}}.parquet",
    log:
        f"{STUDY}/logs/pairwise_judge/{{judge}}.log",
    benchmark:
        f"{STUDY}/benchmarks/pairwise_judge/{{judge}}.tsv"
    threads: heavy_threads()
    resources:
        **resources_for("pairwise_judge"),
    params:
        policy_temperatures=POLICY_TEMPERATURES,
        # an HTTP judge's verdicts, kept as they arrive (not an output: a failed job keeps them for the rerun)
        verdict_cache=f"{STUDY}/cache/verdicts/{{judge}}.jsonl",
    script:
        "../scripts/pairwise_judge.py"


rule compare:
    input:
        unpack(judge_inputs),
        study_run=STUDY_RUN,
        scored=[f"{STUDY}/evaluate/{p}/temp~{t}/scored.parquet" for p, t in POLICY_TEMPERATURES],
        pairwise=expand(f"{STUDY}/compare/pairwise/{{judge}}.parquet", judge=PAIRWISE_JUDGES),
        prompts=f"{STUDY}/data/prompts_test.parquet",
        pair_stats=f"{STUDY}/pairs/stats.json",
    output:
        judgments=f"{STUDY}/compare/judgments.parquet",
        scores=f"{STUDY}/compare/scores.parquet",
        outcomes=f"{STUDY}/compare/outcomes.parquet",  # per prompt: reward, KL, lengths (the seed aggregation's input)
        lc_draws=f"{STUDY}/compare/lc_draws.parquet",  # the LC fits' bootstrap draws, paired over policies
        win_rates=report(f"{STUDY}/compare/win_rates.csv", caption="../report/win_rates.rst", category="Summary"),
        length=f"{STUDY}/compare/length_analysis.json",
    log:
        f"{STUDY}/logs/compare.log",
    benchmark:
        f"{STUDY}/benchmarks/compare.tsv"
    resources:
        **resources_for("compare"),
    params:
        policies=POLICIES,
    script:
        "../scripts/compare.py"
