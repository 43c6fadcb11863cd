"""The repository stands on its own: every repository path that its code, configs and docs name
(src/..., workflow/..., docs/..., a NAME.md, ...) exists, except the files a reader is shown how to
create (EXAMPLES). Tests are not scanned: they create files of their own."""

import re
import subprocess

from dpolab.config import ROOT

# files the docs walk a reader through creating
EXAMPLES = {"configs/my_study.yaml", "profiles/mysite", "workflow/rules/variants/preferred_ft.smk"}
PATH = re.compile(
    r"(?<![\w/.~{<-])((?:src|workflow|tests|envs|configs|profiles|benchmarks|docs|results|\.ci)/[\w./-]*\w"
    r"|[A-Z][A-Z_-]+\.md)"
)
REPOSITORY = ("src", "workflow", "tests", "envs", "configs", "profiles", "benchmarks", "docs", ".ci")


def tracked_text_files():
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in listed:
        path = ROOT / name
        if name.startswith("tests/") or path.suffix in (".parquet", ".png", ".gguf", ".safetensors", ".npz"):
            continue
        try:
            yield name, path.read_text()
        except (UnicodeDecodeError, FileNotFoundError):
            continue


def test_every_named_repository_file_exists():
    missing = {}
    for name, text in tracked_text_files():
        for match in PATH.finditer(text):
            reference = match.group(1).rstrip(".")
            if reference.startswith("results/") or reference in EXAMPLES:
                continue  # results/ is made by a study
            if text[match.end() : match.end() + 1] in ("<", "{"):
                continue  # a pattern such as tests/unit/test_<module>.py
            if reference.split("/")[0] in REPOSITORY or reference.endswith(".md"):
                if not (ROOT / reference).exists():
                    missing.setdefault(reference, []).append(name)
    assert not missing, missing
