# dpolab: a DPO study as a Snakemake workflow. Entry point only: config, includes, targets.
# Run: snakemake --cores all --configfile configs/default.yaml   (or: make study)

configfile: "configs/default.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/mlflow.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/judge.smk"
include: "workflow/rules/sft.smk"
include: "workflow/rules/pairs.smk"
include: "workflow/rules/reference.smk"
include: "workflow/rules/dpo.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/compare.smk"
include: "workflow/rules/summary.smk"


rule all:
    input:
        study_targets(),
    default_target: True
