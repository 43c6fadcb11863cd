rule summary:
    input:
        unpack(judge_accuracy),
        study_run=STUDY_RUN,
        metrics=[f"{STUDY}/evaluate/{p}/temp~{t}/metrics.json" for p, t in POLICY_TEMPERATURES],
        checkpoint_metrics=[
            f"{STUDY}/evaluate/{p}/temp~{t}/metrics.json" for p in CHECKPOINT_POLICIES for t in TEMPERATURES
        ],
        win_rates=f"{STUDY}/compare/win_rates.csv",
        scores=f"{STUDY}/compare/scores.parquet",
        outcomes=f"{STUDY}/compare/outcomes.parquet",
        judgments=f"{STUDY}/compare/judgments.parquet",
        lc_draws=f"{STUDY}/compare/lc_draws.parquet",
        length=f"{STUDY}/compare/length_analysis.json",
        data_card=f"{STUDY}/data/data_card.json",
        pair_stats=f"{STUDY}/pairs/stats.json",
    output:
        **(
            {
                "checkpoints": report(
                    f"{STUDY}/checkpoints.csv", caption="../report/checkpoints.rst", category="Summary"
                ),
                "checkpoints_by_seed": f"{STUDY}/checkpoints_by_seed.csv",
                "checkpoint_plot": report(
                    f"{STUDY}/plots/checkpoint_frontier.png",
                    caption="../report/checkpoint_frontier.rst",
                    category="Plots",
                ),
            }
            if CHECKPOINT_POLICIES
            else {}
        ),
        summary=report(f"{STUDY}/summary.csv", caption="../report/summary.rst", category="Summary"),
        summary_by_seed=report(
            f"{STUDY}/summary_by_seed.csv", caption="../report/summary_by_seed.rst", category="Summary"
        ),
        comparisons=report(f"{STUDY}/comparisons.csv", caption="../report/comparisons.rst", category="Summary"),
        summary_page=report(f"{STUDY}/summary.html", caption="../report/summary.rst", category="Summary"),
        frontier=report(f"{STUDY}/plots/reward_vs_kl.png", caption="../report/reward_vs_kl.rst", category="Plots"),
        frontier_by_variant=report(
            f"{STUDY}/plots/frontier_by_variant.png", caption="../report/frontier_by_variant.rst", category="Plots"
        ),
        win_rate=report(
            f"{STUDY}/plots/win_rate_vs_beta.png", caption="../report/win_rate_vs_beta.rst", category="Plots"
        ),
        length=report(f"{STUDY}/plots/length_vs_beta.png", caption="../report/length_vs_beta.rst", category="Plots"),
        lc=report(f"{STUDY}/plots/raw_vs_lc_win_rate.png", caption="../report/raw_vs_lc_win_rate.rst", category="Plots"),
        temperature=report(
            f"{STUDY}/plots/win_rate_vs_temperature.png",
            caption="../report/win_rate_vs_temperature.rst",
            category="Plots",
        ),
        score_length=report(
            f"{STUDY}/plots/score_vs_length.png", caption="../report/score_vs_length.rst", category="Plots"
        ),
        series=f"{STUDY}/plots/series.json",
        # evaluation.checkpoints: each (variant, beta)'s curve over training steps
        data_card=f"{STUDY}/data_card.json",  # the data job's card with the accuracy of the judge trained in the study
        config=f"{STUDY}/resolved_config.yaml",
    log:
        f"{STUDY}/logs/summary.log",
    benchmark:
        f"{STUDY}/benchmarks/summary.tsv"
    resources:
        **resources_for("summary"),
    params:
        score_judge=SCORE_JUDGE,
    script:
        "../scripts/summary.py"
