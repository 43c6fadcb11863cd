"""Config errors stop the workflow before any job runs, naming the key."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dpolab.config import ROOT, check_duplicate_keys, load_study, read_study
from dpolab.errors import ConfigError
from dpolab.study import format_value
from helpers.examples import smoke_with

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
        study = read_study(ROOT / "configs" / f"{name}.yaml")
        assert study.name == name and study.config["study"] == name
        assert study.config["mlflow"]["tracking_uri"] is None  # default from the schema
        assert study.config["evaluation"]["confidence_level"] == 0.95


def test_grid_points_and_policy_paths():
    study = read_study(ROOT / "configs" / "default.yaml")
    points = study.points
    # dpo, ipo, cdpo over the grid's betas; rdpo, simpo and the rule variants kto and orpo at their own
    # ... each trained once per seed
    assert study.seeds == (0, 1, 2) and len(points) == (3 * 3 + 1 + 1 + 1 + 1) * 3
    assert [p.path for p in points[:2]] == ["variant~dpo/beta~0.05/seed~0", "variant~dpo/beta~0.05/seed~1"]
    assert study.policies[0] == "sft" and len(study.policies) == 1 + 13 * 3
    assert [(p.variant, p.rule, p.beta, p.starts_from) for p in points if p.rule != "dpo" and p.seed == 0] == [
        ("kto", "kto", 0.1, "sft"),
        ("orpo", "orpo", 0.1, "base"),
    ]
    cdpo = [p for p in points if p.variant == "cdpo"][0]
    assert cdpo.loss_params == {"label_smoothing": 0.1}
    simpo = [p for p in points if p.variant == "simpo"]
    assert [(p.beta, p.loss_params) for p in simpo] == [(2.0, {"gamma": 1.0})] * 3  # "betas" is not a loss parameter
    assert study.betas == [0.05, 0.1, 0.5, 2.0]
    assert study.point("simpo", "2", "0") is simpo[0] and study.point("dpo", 0.05, 0) is points[0]
    assert format_value(1.0) == "1" and format_value(0.05) == "0.05" and format_value(0) == "0"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"grid__variants": ["dpo", "kto2"]}, r"grid\.variants\.1: unknown variant 'kto2'"),
        ({"variants__ipo": {"loss": "ipoo"}}, r"variants\.ipo\.loss: unknown loss 'ipoo'"),
        ({"grid__betas": [0.1, 0.0]}, r"grid\.betas\.1: 0\.0 is less than or equal to the minimum of 0"),
        ({"grid__betas": [-0.5]}, r"grid\.betas\.0: -0\.5 is less than or equal to the minimum of 0"),
        (
            {"variants__dpo": {"loss": "dpo", "betas": [0.0]}},
            r"variants\.dpo\.betas\.0: 0\.0 is less than or equal to the minimum of 0",
        ),
        ({"variants__dpo": {"loss": "rdpo", "alpha": -1}}, r"variants\.dpo\.alpha: must be >= 0, got -1"),
        (
            {"variants__cdpo": {"loss": "cdpo", "label_smoothing": 0.5}},
            r"variants\.cdpo\.label_smoothing: must be in \[0, 0\.5\)",
        ),
        (
            {"variants__cdpo": {"loss": "cdpo", "label_smoothing": -0.1}},
            r"variants\.cdpo\.label_smoothing: must be in \[0, 0\.5\)",
        ),
        ({"study": _DELETE}, r"^study: required key is missing"),
        ({"grid__betas": _DELETE}, r"^grid\.betas: required key is missing"),
        ({"model__source": _DELETE}, r"^model\.source: required key is missing"),
        ({"dpo": {"max_stepz": 3}}, r"^dpo\.max_stepz: unknown key \(allowed here: batch_size, "),
        ({"model": {"source": "local"}}, r"^model\.path: required when model\.source is 'local'"),
    ],
)
def test_bad_config_names_the_key(changes, message):
    with pytest.raises(ConfigError, match=message):
        load_study(_config(**changes))


def test_snakemake_stops_before_any_job(tmp_path):
    bad = _config(**{"variants__cdpo": {"loss": "cdpo", "label_smoothing": 0.7}, "study": "bad-config-test"})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    snakemake = Path(sys.executable).with_name("snakemake")
    result = subprocess.run(
        [str(snakemake), "--cores", "1", "--configfile", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "variants.cdpo.label_smoothing: must be in [0, 0.5), got 0.7" in result.stdout + result.stderr
    assert not (ROOT / "results" / "bad-config-test").exists()


@pytest.mark.parametrize("name", ["default", "smoke", "length_bias"])
def test_dry_run(name):
    snakemake = Path(sys.executable).with_name("snakemake")
    result = subprocess.run(
        [str(snakemake), "-n", "--forceall", "--quiet", "rules", "--configfile", f"configs/{name}.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    points = read_study(ROOT / "configs" / f"{name}.yaml").points
    for rule in (
        "mlflow_study",
        "data",
        "judge",
        "base_model",
        "sft",
        "pairs",
        "reference",
        "dpo",
        "generate",
        "evaluate",
        "compare",
        "summary",
    ):
        assert rule in out, rule
    # every grid point is trained once, by the dpo rule (registry losses) or its variant's rule
    counts = {
        line.split()[0]: int(line.split()[1])
        for line in out.splitlines()
        if len(line.split()) == 2 and line.split()[1].isdigit()
    }
    for rule in {p.rule for p in points}:
        assert counts[rule] == sum(p.rule == rule for p in points), rule
    assert counts["generate"] == len(points) + 1


def test_a_config_file_replaces_the_default_study():
    """--configfile smoke.yaml must not inherit default.yaml's variants (simpo's betas: [2.0],
    its grid's ipo)."""
    snakemake = Path(sys.executable).with_name("snakemake")
    result = subprocess.run(
        [str(snakemake), "-n", "--forceall", "--configfile", "configs/smoke.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dpo/variant~orpo/beta~0.1/seed~0/model" in result.stdout
    assert (
        "beta~2" not in result.stdout and "variant~ipo" not in result.stdout and "results/default" not in result.stdout
    )


# ---- one checked, frozen study ----------------------------------------------------------------
def test_checking_leaves_the_users_dict_alone_and_the_study_is_frozen():
    import dataclasses

    config = _config()
    before = copy.deepcopy(config)
    study = load_study(config)
    assert config == before  # no defaults written into it, no variant settings made explicit
    assert study.config["variants"]["orpo"]["starts_from"] == "base"  # ...they are in the study's resolved copy
    assert study.config["dpo"]["gradient_accumulation_steps"] == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        study.name = "other"
    with pytest.raises(TypeError):
        study.config["dpo"]["max_steps"] = 1  # read-only all the way down
    with pytest.raises(TypeError):
        study.variants["cdpo"].params["label_smoothing"] = 0.3
    # each stage's settings typed (dpolab.settings), frozen too
    assert (
        study.dpo.max_steps == study.config["dpo"]["max_steps"]
        and study.data.n_test_prompts == DEFAULT["data"]["n_test_prompts"]
    )
    assert study.sft.seed == 0 and study.judge.max_features == study.config["judge"]["max_features"]
    assert (
        study.generation.temperatures == study.temperatures == (0.0, 0.5, 1.0)
        and study.pairs.completions_per_prompt == 4
    )
    assert study.evaluation.primary_judge == "gold" and study.mlflow.tracking_uri is None and study.mlflow.log_models
    with pytest.raises(dataclasses.FrozenInstanceError):
        study.dpo.max_steps = 1
    section = study.section("dpo")
    section["max_steps"] = 1  # a copy: the study is unchanged
    assert study.config["dpo"]["max_steps"] == DEFAULT["dpo"]["max_steps"]
    assert (
        load_study(study.to_dict(), check_environment=False) == study
    )  # the resolved config reads back as the same study


def test_checking_a_config_imports_neither_torch_nor_vllm():
    """The Snakefile checks the config in every parse (dry runs, each cluster job): heavy imports
    there cost seconds each time."""
    code = (
        "import sys; from dpolab.config import read_study; read_study('configs/default.yaml'); "
        "read_study('configs/smoke.yaml'); "
        "print(sorted(m for m in ('torch', 'vllm', 'transformers', 'mlflow', 'trl', 'sklearn') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def _imports(path: Path) -> set[str]:
    """dpolab modules a source file imports, at the top or inside functions."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dpolab"):
            names = [node.module] if node.module != "dpolab" else [f"dpolab.{a.name}" for a in node.names]
            found.update(names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("dpolab."))
    return found


def test_no_import_cycle_among_dpolab_modules():
    package = ROOT / "src" / "dpolab"
    graph = {f"dpolab.{p.stem}": _imports(p) for p in package.glob("*.py") if p.stem != "__init__"}
    assert len(graph) > 15 and graph["dpolab.config"] >= {"dpolab.study", "dpolab.variants", "dpolab.losses"}

    def cycle_from(module, trail):
        for imported in sorted(graph.get(module, ())):
            if imported in trail:
                return trail[trail.index(imported) :] + [imported]
            found = cycle_from(imported, trail + [imported])
            if found:
                return found
        return None

    for module in graph:
        assert cycle_from(module, [module]) is None, " -> ".join(cycle_from(module, [module]))


# ---- holes found by trying broken inputs (tests/project/test_bad_inputs.py tries them all through Snakemake)
@pytest.mark.parametrize(
    "changes, message",
    [
        ({"grid__betas": [0.1, float("nan")]}, r"^grid\.betas\.1: nan is not a finite number"),
        ({"generation__temperatures": [float("inf")]}, r"^generation\.temperatures\.0: inf is not a finite number"),
        ({"dpo__learning_rate": float("nan")}, r"^dpo\.learning_rate: nan is not a finite number"),
        (
            {"variants__cdpo": {"loss": "cdpo", "label_smoothing": float("nan")}},
            r"^variants\.cdpo\.label_smoothing: nan is not",
        ),
        ({"grid__betas": [0.1, 0.1000001]}, r"^grid\.betas: 0\.1 and 0\.1000001 are both written beta~0\.1 in paths"),
        (
            {"generation__temperatures": [0.7, 0.70000001]},
            r"^generation\.temperatures: 0\.7 and 0\.70000001 are both written temp~0\.7",
        ),
        (
            {"variants__simpo": {"loss": "simpo", "betas": [2.0, 2.0000001]}},
            r"^variants\.simpo\.betas: 2\.0 and 2\.0000001",
        ),
        ({"grid__seeds": [1.0]}, r"^grid\.seeds\.0: 1\.0 is not of type integer \(write it without a decimal point\)"),
        ({"dpo__max_steps": 5.0}, r"^dpo\.max_steps: 5\.0 is not of type integer"),
        ({"study": "x" * 300}, r"^study: 'x{40,}\.\.\.' \(300 characters\) has characters|^study: .* is too long"),
        ({"study": "a/b"}, r"^study: 'a/b' has characters that are not allowed"),
        ({"mlflow": {"tracking_uri": "not a uri"}}, r"^mlflow\.tracking_uri: 'not a uri' is not supported"),
        ({"mlflow": {"tracking_uri": "ftp://host/x"}}, r"^mlflow\.tracking_uri: 'ftp://host/x' is not supported"),
        (
            {"mlflow": {"tracking_uri": "http://user:secret@host:5000"}},
            r"^mlflow\.tracking_uri: do not put credentials in the URI",
        ),
        (
            {
                "judges": {
                    "gold": {"kind": "gold"},
                    "llm": {"kind": "llm_pairwise", "source": "base", "template": "{prompt} {first} { {second}"},
                }
            },
            r"^judges\.llm\.template: not a valid template \(.*\); write a literal brace as \{\{ or \}\}",
        ),
        (
            {"data__n_test_prompts": 100_000},
            r"^data\.n_test_prompts: 100000 prompts asked, but the test split has 2500 of the 25000",
        ),
    ],
)
def test_holes_are_closed(changes, message):
    with pytest.raises(ConfigError, match=message):
        load_study(_config(**changes))


def test_duplicate_yaml_keys_are_refused_with_the_key_and_lines(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("study: dup\nvariants:\n  dpo: {loss: dpo}\n  ipo: {loss: ipo}\n  dpo: {loss: ipo}\n")
    with pytest.raises(ConfigError, match=r"^variants\.dpo: key 'dpo' appears twice in .*dup\.yaml \(lines 3 and 5\)"):
        check_duplicate_keys(path)
    with pytest.raises(ConfigError, match=r"^variants\.dpo: key 'dpo' appears twice"):
        read_study(path)


def test_command_line_strings_are_read_as_the_schema_types():
    """Snakemake reads `--config 'dpo={max_steps: 5}'` with YAML's base loader: '5' is a string."""
    config = _config()
    config["dpo"]["max_steps"] = "5"
    config["grid"]["seeds"] = ["0", "1"]
    config["mlflow"] = {"tracking_uri": "null", "log_models": "false"}
    overrides = {
        "dpo": {"max_steps": "5"},
        "grid": {"seeds": ["0", "1"]},
        "mlflow": {"tracking_uri": "null", "log_models": "false"},
    }
    study = load_study(config, overrides=overrides)
    assert study.config["dpo"]["max_steps"] == 5 and study.seeds == (0, 1)
    assert study.config["mlflow"]["tracking_uri"] is None and study.config["mlflow"]["log_models"] is False
    assert study.config["dpo"]["batch_size"] == DEFAULT["dpo"]["batch_size"]  # the rest of the section stays
    with pytest.raises(ConfigError, match=r"^dpo\.max_steps: 'five' is not of type integer"):
        load_study(_config(dpo__max_steps="five"), overrides={"dpo": {"max_steps": "five"}})
    with pytest.raises(ConfigError, match=r"^dpo\.max_steps: '5' is not of type integer"):
        load_study(_config(dpo__max_steps="5"))  # a quoted number in a file is the file's mistake


def test_config_files_are_checked_with_their_name_before_snakemake_reads_them(tmp_path):
    """`make study` / `make dry-run` run `python -m dpolab.config CONFIG` first: Snakemake reads a
    --configfile before the workflow and reports a broken one without naming it."""

    def check(*paths):
        result = subprocess.run(
            [sys.executable, "-m", "dpolab.config", *map(str, paths)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return result.returncode, result.stdout + result.stderr

    broken = tmp_path / "broken.yaml"
    broken.write_text("study: broken\nvariants:\n  dpo: {loss: dpo\ngrid: {}\n")
    status, out = check(broken)
    assert (
        status == 2
        and f"invalid config: {broken}: not valid YAML (" in out
        and "line 4" in out
        and "Traceback" not in out
    )
    listing = tmp_path / "list.yaml"
    listing.write_text("- study\n- grid\n")
    status, out = check(listing)
    assert status == 2 and f"{listing}: a config must be a mapping" in out
    status, out = check(tmp_path / "missing.yaml")
    assert status == 2 and f"{tmp_path / 'missing.yaml'}: config file not found" in out
    override = tmp_path / "override.yaml"
    override.write_text("dpo: {max_steps: 3}\n")
    status, out = check(ROOT / "configs" / "smoke.yaml", override)
    assert status == 0 and "config OK: study smoke, 3 trained policies" in out, out
    override.write_text("dpo: {max_steps: 0}\n")
    status, out = check(ROOT / "configs" / "smoke.yaml", override)
    assert status == 2 and "invalid config: dpo.max_steps: 0 is less than the minimum of 1" in out


@pytest.mark.parametrize(
    "steps, train, message",
    [
        (
            [2],
            None,
            r"evaluation.checkpoints: step 2 is not before the end of variant dpo's training \(dpo.max_steps: 2\)",
        ),
        (
            [1],
            {"max_steps": 1},
            r"step 1 is not before the end of variant kto's training \(variants.kto.train.max_steps: 1\)",
        ),
    ],
)
def test_a_step_at_or_after_the_end_of_training_is_refused_naming_the_key(steps, train, message):
    config = smoke_with(checkpoints=steps)
    if train:
        config["variants"]["kto"]["train"] = train
    with pytest.raises(ConfigError, match=message):
        load_study(config, check_environment=False)


@pytest.mark.parametrize("steps", [[0], [1, 1], "1"])
def test_bad_checkpoint_lists_are_refused_by_the_schema(steps):
    with pytest.raises(ConfigError, match="evaluation.checkpoints"):
        load_study(smoke_with(checkpoints=steps), check_environment=False)
