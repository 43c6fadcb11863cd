# dpolab: a DPO study as a Snakemake workflow. Entry point only: config, includes, targets.
# Run: snakemake --cores all --configfile configs/default.yaml   (or: make study)

# The default study when no --configfile is given. A given config file replaces it rather
# than being merged into it, so a study never inherits another study's variants or judges.
if not workflow.overwrite_configfiles:

    configfile: "configs/default.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/mlflow.smk"


# The data stage and the study's own judge: the IMDb miniature makes its pairs (SFT samples ranked
# by a gold classifier trained on reviews); a preference study reads them from its dataset and may
# train a reward model on prompts the policies never see.
if study.preferences:

    include: "workflow/rules/preference_data.smk"
    include: "workflow/rules/reward_model.smk"

else:

    include: "workflow/rules/data.smk"
    include: "workflow/rules/judge.smk"
    include: "workflow/rules/pairs.smk"


include: "workflow/rules/sft.smk"
include: "workflow/rules/reference.smk"
include: "workflow/rules/dpo.smk"


# Variants with their own rule (KTO, ORPO, yours): workflow/rules/variants/<rule>.smk, included
# when a grid variant names it (`rule: <rule>` in the config).
for variant_rule_file in variant_rule_files():

    include: variant_rule_file


include: "workflow/rules/generate.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/compare.smk"
include: "workflow/rules/summary.smk"


rule all:
    default_target: True
    input:
        study_targets(),
