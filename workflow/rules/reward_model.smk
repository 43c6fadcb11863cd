# A reward model trained in the study (a judge with kind reward_model, source study): TRL's
# RewardTrainer on pairs whose prompts the policies never train on, measured on the test pairs.
rule reward_model:
    input:
        study_run=STUDY_RUN,
        base=f"{STUDY}/base/model",
        train=f"{STUDY}/data/reward_train.parquet",
        eval=f"{STUDY}/data/reward_eval.parquet",
    output:
        model=directory(REWARD_MODEL_DIR),
        accuracy=f"{STUDY}/reward_model/accuracy.json",
        train_log=f"{STUDY}/reward_model/train_log.json",
    log:
        f"{STUDY}/logs/reward_model.log",
    benchmark:
        f"{STUDY}/benchmarks/reward_model.tsv"
    threads: stage_threads()
    resources:
        **resources_for("reward_model"),
    message:
        launch_message("reward_model")
    script:
        "../scripts/reward_model.py"
