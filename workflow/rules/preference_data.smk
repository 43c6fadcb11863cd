# A preference study's data (data.source: preferences): the dataset's pairs, checked row by row,
# split, subsampled and rendered through the policy's chat template; the pairs stage of the IMDb
# miniature is not needed, so this rule writes its outputs (pairs/pairs.parquet, pairs/stats.json)
# and every later rule reads them as they are.


def preference_data_outputs():
    outputs = {
        "pairs": f"{STUDY}/pairs/pairs.parquet",
        "pair_stats": f"{STUDY}/pairs/stats.json",
        "prompts_test": f"{STUDY}/data/prompts_test.parquet",
        "card": f"{STUDY}/data/data_card.json",
    }
    if not study.sft_skipped:
        outputs["sft_train"] = f"{STUDY}/data/sft_train.parquet"
    if study.trains_reward_model:
        outputs["reward_train"] = f"{STUDY}/data/reward_train.parquet"
        outputs["reward_eval"] = f"{STUDY}/data/reward_eval.parquet"
    return outputs


def local_data_files():
    """Local data files and folders, so that an edited file reruns the data job."""
    from dpolab.preference_data import is_local

    paths = [study.data.path]
    if study.sft_source == "dataset":
        paths.append(study.sft_data.dataset["path"])
    return [p for p in paths if is_local(p)]


rule data:
    input:
        study_run=STUDY_RUN,
        base=f"{STUDY}/base/model",
        files=local_data_files(),
    output:
        **preference_data_outputs(),
    log:
        f"{STUDY}/logs/data.log",
    benchmark:
        f"{STUDY}/benchmarks/data.tsv"
    resources:
        **resources_for("data"),
    script:
        "../scripts/preference_data.py"
