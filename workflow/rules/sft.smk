rule base_model:
    input:
        STUDY_RUN,
    output:
        model=directory(f"{STUDY}/base/model"),
    log:
        f"{STUDY}/logs/base_model.log",
    benchmark:
        f"{STUDY}/benchmarks/base_model.tsv"
    resources:
        **resources_for("base_model"),
    script:
        "../scripts/base_model.py"


# No SFT job when a preference study starts from a tuned model (sft.data: none): SFT_MODEL is the base model.
if not study.sft_skipped:

    rule sft:
        input:
            study_run=STUDY_RUN,
            base=f"{STUDY}/base/model",
            texts=f"{STUDY}/data/sft_train.parquet",
        output:
            # peft.sft: lora: the adapter SFT trained, merged into model/
            **({"adapter": directory(f"{STUDY}/sft/adapter")} if study.peft and study.peft.sft == "lora" else {}),
            model=directory(f"{STUDY}/sft/model"),
            train_log=f"{STUDY}/sft/train_log.json",
        log:
            f"{STUDY}/logs/sft.log",
        benchmark:
            f"{STUDY}/benchmarks/sft.tsv"
        threads: stage_threads()
        resources:
            **resources_for("sft"),
        message:
            launch_message("sft")
        script:
            "../scripts/sft.py"
