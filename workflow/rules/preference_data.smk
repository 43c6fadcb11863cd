# A preference study's data (data.source: preferences): the dataset's pairs, checked row by row,
# split, subsampled and rendered through the policy's chat template; the pairs stage of the IMDb
# miniature is not needed, so this rule writes its outputs (pairs/pairs.parquet, pairs/stats.json)
# and every later rule reads them as they are.


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
