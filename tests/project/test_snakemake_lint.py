"""`snakemake --lint` (run by `make lint` and the suite): the only advice left is a conda
environment or container per rule. The workflow runs every rule in one pinned virtual environment
(`make env`, envs/*.txt) on purpose: the rules share torch, vLLM and TRL builds that must match
each other and the machine (CPU or CUDA), a per-rule conda env would resolve them apart, and a
cluster node reuses the same venv on a shared filesystem (docs/development.md)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dpolab.config import ROOT

ALLOWED = "Specify a conda environment or container for each rule."


def preference_study_without_its_server(folder: Path) -> str:
    """configs/preference_file.yaml without its HTTP judge (a server on 127.0.0.1 that the config
    check would ask for): the rule files of a preference study (preference_data, reward_model)."""
    config = yaml.safe_load((ROOT / "configs" / "preference_file.yaml").read_text())
    del config["judges"]["llm"]
    path = folder / "preference_study.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


# the smoke study includes the IMDb stages and both rule variants, the preference study its own stages
@pytest.mark.parametrize("config", ["configs/smoke.yaml", "configs/default.yaml", "preference"])
def test_snakemake_lint_gives_only_the_conda_advice(config, tmp_path):
    if config == "preference":
        config = preference_study_without_its_server(tmp_path)
    snakemake = Path(sys.executable).parent / "snakemake"
    done = subprocess.run(
        [str(snakemake), "--lint", "--configfile", config], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    output = done.stdout + done.stderr
    linted = re.findall(r"^Lints for (rule \w+|snakefile)", output, flags=re.M)
    advice = re.findall(r"^\s+\* (.+?):?$", output, flags=re.M)
    assert linted and advice, output[-3000:]  # the workflow parsed and was linted
    assert set(advice) == {ALLOWED}, output[-3000:]
    assert "snakefile" not in linted, output[-3000:]  # nothing about the rule files themselves
