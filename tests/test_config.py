"""Config errors stop the workflow before any job runs, naming the key."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dpolab.config import all_betas, ROOT, format_value, grid_points, load_config, policies, validate_config
from dpolab.errors import ConfigError

DEFAULT = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())


def _config(**changes):
    config = copy.deepcopy(DEFAULT)
    for dotted, value in changes.items():
        node = config
        *parents, last = dotted.split("__")
        for key in parents:
            node = node[key]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
    return config


_DELETE = object()


def test_shipped_configs_are_valid_and_get_schema_defaults():
    for name in ("default", "smoke", "length_bias"):
        config = load_config(ROOT / "configs" / f"{name}.yaml")
        assert config["study"] == name
        assert config["mlflow"]["tracking_uri"] is None  # default from the schema
        assert config["evaluation"]["confidence_level"] == 0.95


def test_grid_points_and_policy_paths():
    config = load_config(ROOT / "configs" / "default.yaml")
    points = grid_points(config)
    # dpo, ipo, cdpo over the grid's betas; rdpo, simpo and the rule variants kto and orpo at their own
    assert len(points) == 3 * 3 + 1 + 1 + 1 + 1
    assert points[0].path == "variant~dpo/beta~0.05/seed~0"
    assert policies(config)[0] == "sft" and len(policies(config)) == 14
    assert [(p.variant, p.rule, p.beta, p.starts_from) for p in points if p.rule != "dpo"] == [
        ("kto", "kto", 0.1, "sft"), ("orpo", "orpo", 0.1, "base")]
    cdpo = [p for p in points if p.variant == "cdpo"][0]
    assert cdpo.loss_params == {"label_smoothing": 0.1}
    simpo = [p for p in points if p.variant == "simpo"]
    assert [(p.beta, p.loss_params) for p in simpo] == [(2.0, {"gamma": 1.0})]  # "betas" is not a loss parameter
    assert all_betas(config) == [0.05, 0.1, 0.5, 2.0]
    assert format_value(1.0) == "1" and format_value(0.05) == "0.05" and format_value(0) == "0"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"grid__variants": ["dpo", "kto2"]}, r"grid\.variants\[1\]: unknown variant 'kto2'"),
        ({"variants__ipo": {"loss": "ipoo"}}, r"variants\.ipo\.loss: unknown loss 'ipoo'"),
        ({"grid__betas": [0.1, 0.0]}, r"grid\.betas\.1: 0\.0 is less than or equal to the minimum of 0"),
        ({"grid__betas": [-0.5]}, r"grid\.betas\.0: -0\.5 is less than or equal to the minimum of 0"),
        ({"variants__dpo": {"loss": "dpo", "betas": [0.0]}}, r"variants\.dpo\.betas\.0: 0\.0 is less than or equal to the minimum of 0"),
        ({"variants__dpo": {"loss": "rdpo", "alpha": -1}}, r"variants\.dpo\.alpha: must be >= 0, got -1"),
        ({"variants__cdpo": {"loss": "cdpo", "label_smoothing": 0.5}}, r"variants\.cdpo\.label_smoothing: must be in \[0, 0\.5\)"),
        ({"variants__cdpo": {"loss": "cdpo", "label_smoothing": -0.1}}, r"variants\.cdpo\.label_smoothing: must be in \[0, 0\.5\)"),
        ({"study": _DELETE}, r"^study: required key is missing"),
        ({"grid__betas": _DELETE}, r"^grid\.betas: required key is missing"),
        ({"model__source": _DELETE}, r"^model\.source: required key is missing"),
        ({"dpo": {"max_stepz": 3}}, r"^dpo: Additional properties are not allowed \('max_stepz'"),
        ({"model": {"source": "local"}}, r"^model\.path: required when model\.source is 'local'"),
    ],
)
def test_bad_config_names_the_key(changes, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(_config(**changes))


def test_snakemake_stops_before_any_job(tmp_path):
    bad = _config(**{"variants__cdpo": {"loss": "cdpo", "label_smoothing": 0.7}, "study": "bad-config-test"})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    snakemake = Path(sys.executable).with_name("snakemake")
    result = subprocess.run(
        [str(snakemake), "--cores", "1", "--configfile", str(path)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0
    assert "variants.cdpo.label_smoothing: must be in [0, 0.5), got 0.7" in result.stdout + result.stderr
    assert not (ROOT / "results" / "bad-config-test").exists()


@pytest.mark.parametrize("name", ["default", "smoke", "length_bias"])
def test_dry_run(name):
    snakemake = Path(sys.executable).with_name("snakemake")
    result = subprocess.run(
        [str(snakemake), "-n", "--forceall", "--quiet", "rules", "--configfile", f"configs/{name}.yaml"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    points = grid_points(load_config(ROOT / "configs" / f"{name}.yaml"))
    for rule in ("mlflow_study", "data", "judge", "base_model", "sft", "pairs", "reference", "dpo", "generate", "evaluate",
                 "compare", "summary"):
        assert rule in out, rule
    # every grid point is trained once, by the dpo rule (registry losses) or its variant's rule
    counts = {line.split()[0]: int(line.split()[1]) for line in out.splitlines() if len(line.split()) == 2 and line.split()[1].isdigit()}
    for rule in {p.rule for p in points}:
        assert counts[rule] == sum(p.rule == rule for p in points), rule
    assert counts["generate"] == len(points) + 1


def test_a_config_file_replaces_the_default_study():
    """--configfile smoke.yaml must not inherit default.yaml's variants (simpo's betas: [2.0],
    its grid's ipo)."""
    snakemake = Path(sys.executable).with_name("snakemake")
    result = subprocess.run(
        [str(snakemake), "-n", "--forceall", "--configfile", "configs/smoke.yaml"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dpo/variant~orpo/beta~0.1/seed~0/model" in result.stdout
    assert "beta~2" not in result.stdout and "variant~ipo" not in result.stdout and "results/default" not in result.stdout
