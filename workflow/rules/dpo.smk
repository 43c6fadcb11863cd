# One job per grid point (variant, beta, seed) of a registry-loss variant: TRL's DPOTrainer
# with the loss from dpolab.losses. Rule variants (workflow/rules/variants/) train the rest.
rule dpo:
    input:
        study_run=STUDY_RUN,
        sft=SFT_MODEL,
        pairs=f"{STUDY}/pairs/pairs.parquet",
        reference=f"{STUDY}/reference/logps.parquet",
        reference_meta=f"{STUDY}/reference/meta.json",
    output:
        **checkpoint_outputs(),
        model=directory(f"{POLICY_DIR}/model"),
        train_log=f"{POLICY_DIR}/train_log.json",
    log:
        policy_log("dpo"),
    benchmark:
        policy_benchmark("dpo")
    wildcard_constraints:
        variant=variants_of("dpo"),
    # Training before generation: a policy's samples wait for its training, so a free core
    # starts the next policy rather than the samples of one already trained.
    priority: 10
    threads: heavy_threads()
    resources:
        **resources_for("dpo"),
    message:
        launch_message("dpo")
    script:
        "../scripts/dpo.py"
