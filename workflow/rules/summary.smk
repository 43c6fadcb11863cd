rule summary:
    input:
        study_run=STUDY_RUN,
        metrics=expand(f"{STUDY}/evaluate/{{policy}}/temp~{{temperature}}/metrics.json", policy=POLICIES, temperature=TEMPERATURES),
        data_card=f"{STUDY}/data/data_card.json",
        judge_accuracy=f"{STUDY}/judge/accuracy.json",
        pair_stats=f"{STUDY}/pairs/stats.json",
    output:
        summary=report(f"{STUDY}/summary.csv", caption="../report/summary.rst", category="Summary"),
        frontier=report(f"{STUDY}/plots/reward_vs_kl.png", caption="../report/reward_vs_kl.rst", category="Plots"),
        win_rate=report(f"{STUDY}/plots/win_rate_vs_beta.png", caption="../report/win_rate_vs_beta.rst", category="Plots"),
        length=report(f"{STUDY}/plots/length_vs_beta.png", caption="../report/length_vs_beta.rst", category="Plots"),
        config=f"{STUDY}/resolved_config.yaml",
    log:
        f"{STUDY}/logs/summary.log",
    benchmark:
        f"{STUDY}/benchmarks/summary.tsv"
    script:
        "../scripts/summary.py"
