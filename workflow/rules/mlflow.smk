rule mlflow_study:
    output:
        f"{STUDY}/mlflow/study_run.json",
    log:
        f"{STUDY}/logs/mlflow_study.log",
    benchmark:
        f"{STUDY}/benchmarks/mlflow_study.tsv"
    script:
        "../scripts/mlflow_study.py"
