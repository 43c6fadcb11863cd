"""The repository's layout as docs/development.md states it: the stage table names every rule file,
rule and script with the modules that hold their logic and the modules' unit tests, and every
module has its own unit test file (tests/unit/test_<module>.py)."""

import re

from dpolab.config import ROOT

SOURCE = ROOT / "src" / "dpolab"
UNIT = ROOT / "tests" / "unit"


def stage_table() -> list[dict[str, list[str]]]:
    """The rows of docs/development.md's stage table, each cell a list of the names in backticks."""
    text = (ROOT / "docs" / "development.md").read_text()
    section = text.split("## Where each stage lives", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows.append({name: re.findall(r"`([^`]+)`", cell) for name, cell in zip(header, cells)})
    return rows


def declared_rules(rule_file) -> set[str]:
    """The rules a rule file declares: `rule name:`, and `rule:` with a `name:` (an f-string's
    fields written as <n>, as the table writes them)."""
    text = rule_file.read_text()
    names = set(re.findall(r"^\s*rule (\w+):", text, flags=re.M))
    for name in re.findall(r"^\s*name:\s*f?\"([^\"]+)\"", text, flags=re.M):
        names.add(re.sub(r"\{[^}]*\}", "<n>", name))
    return names


def test_the_stage_table_names_every_rule_file_rule_and_script():
    rows = stage_table()
    tabled = [row["Rule file"][0] for row in rows]
    rule_files = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "workflow" / "rules").rglob("*.smk"))
    assert sorted(tabled) == rule_files, "docs/development.md: the stage table and workflow/rules differ"
    for row in rows:
        rule_file = ROOT / row["Rule file"][0]
        assert declared_rules(rule_file) == set(row["Rules"]), rule_file
        scripts = set(re.findall(r"scripts/(\w+\.py)", rule_file.read_text()))
        assert scripts == set(row["Scripts"]), rule_file
        for script in scripts:
            assert (ROOT / "workflow" / "scripts" / script).is_file(), script


def test_the_stage_tables_modules_exist_with_their_unit_tests():
    for row in stage_table():
        for module in row["Logic"]:
            assert (SOURCE / module).is_file(), module
            assert f"test_{module}" in row["Unit tests"], f"{row['Rule file']}: no test_{module} in the row"
        for test_file in row["Unit tests"]:
            assert (UNIT / test_file).is_file(), test_file


def test_every_module_has_its_unit_test_file_and_every_unit_test_file_a_module():
    modules = {path.stem for path in SOURCE.glob("*.py")}
    missing = sorted(m for m in modules if not (UNIT / f"test_{m}.py").is_file())
    assert not missing, f"modules without tests/unit/test_<module>.py: {missing}"
    for test_file in UNIT.glob("test_*.py"):
        name = test_file.stem.removeprefix("test_")
        # test_<module>.py or test_<module>_<aspect>.py
        assert any(name == m or name.startswith(f"{m}_") for m in modules), (
            f"{test_file.name} is named for no module of src/dpolab"
        )
