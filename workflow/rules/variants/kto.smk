# KTO (Ethayarajh et al. 2024): learns from unpaired desirable/undesirable examples, with TRL's
# KTOTrainer. Included by the Snakefile when a grid variant has `rule: kto`; its settings
# (desirable_weight, undesirable_weight, examples_per_pair, unpaired_data) are checked by
# dpolab.variants.KTOVariant when the config is read (the file by dpolab.checks).


# Unpaired (prompt, completion, label) examples: each pair's chosen response desirable and its
# rejected one undesirable, or the examples of `unpaired_data` as they are.
rule kto_examples:
    input:
        unpack(kto_examples_source),
        study_run=STUDY_RUN,
    output:
        examples=f"{STUDY}/unpaired/variant~{{variant}}/examples.parquet",
        stats=f"{STUDY}/unpaired/variant~{{variant}}/stats.json",
    log:
        f"{STUDY}/logs/kto_examples/variant~{{variant}}.log",
    benchmark:
        f"{STUDY}/benchmarks/kto_examples/variant~{{variant}}.tsv"
    wildcard_constraints:
        variant=variants_of("kto"),
    resources:
        **resources_for("kto_examples"),
    script:
        "../../scripts/kto_examples.py"


rule kto:
    input:
        study_run=STUDY_RUN,
        start=start_model,
        examples=f"{STUDY}/unpaired/variant~{{variant}}/examples.parquet",
    output:
        **checkpoint_outputs(),
        model=directory(f"{POLICY_DIR}/model"),
        train_log=f"{POLICY_DIR}/train_log.json",
    log:
        policy_log("kto"),
    benchmark:
        policy_benchmark("kto")
    wildcard_constraints:
        variant=variants_of("kto"),
    # Training before generation: a policy's samples wait for its training, so a free core
    # starts the next policy rather than the samples of one already trained.
    priority: 10
    threads: heavy_threads()
    resources:
        **resources_for("dpo"),
    message:
        launch_message("kto")
    script:
        "../../scripts/kto.py"
