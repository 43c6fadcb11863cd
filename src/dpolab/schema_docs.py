"""docs/configuration.md, generated from workflow/schemas/config.schema.yaml: every key with its
type, default, allowed values and description, one table per section, so the reference cannot
drift from the schema that checks configs (tests/unit/test_schema_docs.py regenerates and compares).

    python -m dpolab.schema_docs            # rewrite docs/configuration.md
    python -m dpolab.schema_docs --check    # exit 1 if it differs from the schema
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
PAGE = ROOT / "docs" / "configuration.md"
HEADER = """# Configuration reference

Generated from `workflow/schemas/config.schema.yaml` by `python -m dpolab.schema_docs`; do not edit
by hand (a test regenerates it and compares). A study config sets what differs from these
defaults; the schema fills in the rest when the config is read, and checks that go beyond one key
(a grid variant that is defined, checkpoint steps before the end of training, ...) are made by
`dpolab.config` when the workflow starts, each error naming its key. `<name>` in a key stands for
a name you choose (a variant, a judge).
"""


def _type(node: dict) -> str:
    kind = node.get("type", "")
    kinds = kind if isinstance(kind, list) else [kind]
    text = " or ".join(k for k in kinds if k)
    if node.get("items", {}).get("type"):
        text += f" of {node['items']['type']}"
    return text


def _limits(node: dict) -> str:
    parts = []
    if "enum" in node:
        parts.append("one of " + ", ".join(f"`{json.dumps(v)}`" for v in node["enum"]))
    for key, sign in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")):
        if key in node:
            parts.append(f"{sign} {node[key]}")
    items = node.get("items", {})
    for key, sign in (("minimum", ">="), ("exclusiveMinimum", ">")):
        if key in items:
            parts.append(f"each {sign} {items[key]}")
    if node.get("uniqueItems"):
        parts.append("distinct")
    if "minItems" in node:
        parts.append(f"at least {node['minItems']} item(s)")
    if "pattern" in node:
        parts.append(f"matches `{node['pattern']}`")
    return "; ".join(parts)


def _cell(text) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def rows(node: dict, prefix: str, required: frozenset = frozenset()) -> list[tuple[str, ...]]:
    """(key, type, default, allowed, description) for `node`'s properties, depth first."""
    found = []
    for name, child in node.get("properties", {}).items():
        key = f"{prefix}.{name}" if prefix else name
        default = json.dumps(child["default"]) if "default" in child else ("required" if name in required else "")
        found.append(
            (
                f"`{key}`",
                _type(child),
                f"`{default}`" if default not in ("", "required") else default,
                _limits(child),
                _cell(child.get("description", "")),
            )
        )
        found += rows(child, key, frozenset(child.get("required", ())))
    entries = node.get("additionalProperties")
    if isinstance(entries, dict) and entries.get("properties"):
        found += rows(entries, f"{prefix}.<name>", frozenset(entries.get("required", ())))
    return found


def render(schema: dict) -> str:
    sections = [HEADER]
    required = frozenset(schema.get("required", ()))
    for name, node in schema["properties"].items():
        sections.append(f"## `{name}`\n")
        if node.get("description") and node.get("properties", node.get("additionalProperties")):  # else in the table
            sections.append(_cell(node["description"]) + "\n")
        table = rows({"properties": {name: node}}, "", required)
        sections.append("| key | type | default | allowed | description |\n|:--|:--|:--|:--|:--|")
        sections.append(
            "\n".join("| " + " | ".join(_cell(c) if i else c for i, c in enumerate(row)) + " |" for row in table) + "\n"
        )
    return "\n".join(sections)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    page = render(yaml.safe_load(SCHEMA.read_text()))
    if args.check:
        if not PAGE.is_file() or PAGE.read_text() != page:
            print(
                f"{PAGE.relative_to(ROOT)} differs from {SCHEMA.relative_to(ROOT)}: run python -m dpolab.schema_docs",
                file=sys.stderr,
            )
            return 1
        return 0
    PAGE.parent.mkdir(exist_ok=True)
    PAGE.write_text(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
