# ORPO (Hong et al. 2024): SFT and preference alignment in one loss, no reference model, with
# TRL's ORPOTrainer. Starts from the base model by default (`starts_from: base`), as the paper
# does; the summary's skipped_sft column marks such policies. Included by the Snakefile when a
# grid variant has `rule: orpo`.
rule orpo:
    input:
        study_run=STUDY_RUN,
        start=start_model,
        pairs=f"{STUDY}/pairs/pairs.parquet",
    output:
        **checkpoint_outputs(),
        model=directory(f"{POLICY_DIR}/model"),
        train_log=f"{POLICY_DIR}/train_log.json",
    log:
        policy_log("orpo"),
    benchmark:
        policy_benchmark("orpo")
    wildcard_constraints:
        variant=variants_of("orpo"),
    # Training before generation: a policy's samples wait for its training, so a free core
    # starts the next policy rather than the samples of one already trained.
    priority: 10
    threads: heavy_threads()
    resources:
        **resources_for("dpo"),
    message:
        launch_message("orpo")
    script:
        "../../scripts/orpo.py"
