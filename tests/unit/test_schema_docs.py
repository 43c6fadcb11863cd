"""docs/configuration.md is the schema's own reference: regenerated, it is the file in the repository,
and every key of the schema is in it."""

import yaml

from dpolab import schema_docs


def keys(node: dict, prefix: str = "") -> list[str]:
    found = []
    for name, child in node.get("properties", {}).items():
        key = f"{prefix}.{name}" if prefix else name
        found += [key, *keys(child, key)]
    if isinstance(node.get("additionalProperties"), dict):
        found += keys(node["additionalProperties"], f"{prefix}.<name>")
    return found


def test_the_configuration_reference_is_generated_from_the_schema():
    assert schema_docs.main(["--check"]) == 0, "docs/configuration.md is stale: run python -m dpolab.schema_docs"


def test_every_schema_key_has_a_row():
    schema = yaml.safe_load(schema_docs.SCHEMA.read_text())
    page = schema_docs.PAGE.read_text()
    listed = keys(schema)
    assert len(listed) > 150 and "evaluation.checkpoints" in listed and "judges.<name>.kind" in listed
    for key in listed:
        assert f"| `{key}` |" in page, key
