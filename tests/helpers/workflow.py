"""Copies of the workflow a test can change and run, the docs' worked examples, and a finished
study's MLflow store."""

import json
import os
import shutil
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
# several jobs side by side, one thread each: the concurrency the stores must survive
SMOKE_COMMAND = [str(BIN / "snakemake"), "--cores", "3", "--max-threads", "1", "--configfile", "configs/smoke.yaml"]


def copy_workflow(work: Path) -> Path:
    """A copy of the workflow, so a test never touches the project's results/."""
    from dpolab.config import ROOT

    work.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "workflow", "configs", "profiles"):
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, work / name)
    return work


def readme_blocks(first_line: str, page: str = "docs/variants.md") -> list[str]:
    """A docs page's fenced code blocks whose first line is `first_line` (e.g. a file's path as
    a comment): the worked examples, so tests run exactly what a user copies."""
    import re

    from dpolab.config import ROOT

    blocks = re.findall(r"^```\w*\n(.*?)^```", (ROOT / page).read_text(), flags=re.S | re.M)
    return [block for block in blocks if block.splitlines()[0].strip() == first_line]


README_RULE_VARIANT = "workflow/rules/variants/preferred_ft.smk"
README_VARIANT = "preferred_ft"
# The SLURM smoke run trains the registry loss and one rule variant: every rule kind of the
# workflow (the dpo rule, a variant's own example-making and `script:` training rules) runs as a
# SLURM job. ORPO (a `script:` rule variant like KTO) and the docs' `run:` variant (docs/variants.md) are trained
# by the local run only: on a 2-core machine each policy in both runs cost over a minute of the
# suite (each run is CPU-bound beside the other).
SLURM_GRID = ["dpo", "kto"]
LOCAL_ONLY_VARIANTS = ("orpo", README_VARIANT)


def local_only(name: str) -> bool:
    """Whether a run name, path or policy belongs to a variant that only the local smoke run
    trains (smoke_studies): the SLURM run is compared with the local one on the rest."""
    return any(f"variant~{v}" in name or name.startswith(f"{v}/") for v in LOCAL_ONLY_VARIANTS)


def edit_smoke_config(work: Path, edit) -> None:
    """Apply `edit` (a function changing the config in place) to a copy's configs/smoke.yaml."""
    import yaml

    config_file = work / "configs" / "smoke.yaml"
    config = yaml.safe_load(config_file.read_text())
    edit(config)
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))


def add_readme_rule_variant(work: Path) -> str:
    """Add the docs' rule-file variant (Preferred-FT, docs/variants.md) to a copy of the workflow: its rule
    file and its config entry, nothing else. Returns the variant's name."""
    import yaml

    (rule_file,) = readme_blocks(f"# {README_RULE_VARIANT}")
    (work / README_RULE_VARIANT).write_text(rule_file)
    (entry,) = [yaml.safe_load(b) for b in readme_blocks("# configs/my_study.yaml") if "preferred_ft" in b]

    def add_entry(config: dict) -> None:
        config["variants"][README_VARIANT] = entry["variants"][README_VARIANT]
        config["grid"]["variants"].append(README_VARIANT)

    edit_smoke_config(work, add_entry)
    return README_VARIANT


def store(work: Path):
    """A smoke study's MLflow store: (study folder, study_run.json, client, every run)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    study = work / "results" / "smoke"
    info = json.loads((study / "mlflow" / "study_run.json").read_text())
    mlflow.set_tracking_uri(info["tracking_uri"])  # artifact URIs of a server store resolve through it
    client = MlflowClient(info["tracking_uri"])
    runs = client.search_runs([info["experiment_id"]], max_results=5000)
    return study, info, client, runs


def copy_study(work: Path, dest: Path) -> Path:
    """A copy of a finished smoke study's work folder (workflow, configs and results, times kept, so
    Snakemake sees the copied outputs as up to date) with its own MLflow store: the sqlite file's
    experiment and study_run.json point at the copy, so nothing written there reaches `work`."""
    import sqlite3

    shutil.copytree(work, dest, symlinks=True, ignore=shutil.ignore_patterns(".snakemake"))
    study = dest / "results" / "smoke"
    run_file = study / "mlflow" / "study_run.json"
    info = json.loads(run_file.read_text())
    info["tracking_uri"] = f"sqlite:///{study / 'mlflow.db'}"
    times = run_file.stat()
    run_file.write_text(json.dumps(info, indent=2))
    os.utime(run_file, ns=(times.st_atime_ns, times.st_mtime_ns))  # every job's input: as old as before
    with sqlite3.connect(study / "mlflow.db") as db:
        db.execute(
            "UPDATE experiments SET artifact_location = replace(artifact_location, ?, ?)", (str(work), str(dest))
        )
        db.execute("UPDATE runs SET artifact_uri = replace(artifact_uri, ?, ?)", (str(work), str(dest)))
    return dest
