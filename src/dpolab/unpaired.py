"""Unpaired feedback for KTO: (prompt, completion, label) examples, derived from the study's
preference pairs or read from a dataset that has them directly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dpolab.locate import is_hub_id
from dpolab.preference_data import read_table

UNPAIRED_COLUMNS = ("prompt", "completion", "label")
FILE_SUFFIXES = (".parquet", ".jsonl", ".csv")


# suffixes of data files this module does not read: such a source is a local file, never a Hub id
OTHER_DATA_SUFFIXES = (".json", ".tsv", ".txt", ".arrow", ".feather", ".pkl", ".pickle", ".xlsx", ".xls", ".gz", ".zip")


def is_local_file(source: str) -> bool:
    """A path with a data-file suffix is a local file; anything else is a Hub dataset id."""
    return Path(source).suffix in FILE_SUFFIXES


def hub_dataset_id(source: str) -> bool:
    """Whether `source` can be a Hub dataset id (`name` or `owner/name`) rather than a path."""
    return is_hub_id(source) and Path(source).suffix.lower() not in OTHER_DATA_SUFFIXES


def read_unpaired_file(path: Path) -> pd.DataFrame:
    """A local file of unpaired examples; any problem reading it is one ValueError naming the file."""
    return read_table(str(path))


def check_unpaired_source(source: str) -> None:
    """A local file must exist, be readable and hold valid examples (see check_unpaired); a Hub
    id is checked when the job loads it (that needs network). ValueError with the file's path."""
    if not is_local_file(source):
        path = Path(source).expanduser()
        if path.is_dir():  # a local dataset folder: the job's load_dataset reads it
            return
        if path.exists() or not hub_dataset_id(source):
            what = f"a {path.suffix or 'suffix-less'} file" if path.exists() else "not a file on this machine"
            raise ValueError(
                f"{source!r} is {what}; give a local {', '.join(FILE_SUFFIXES)} file or a Hub dataset id (owner/name)"
            )
        return
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"{source!r} is not a file")
    check_unpaired(read_unpaired_file(path), str(path))


def check_unpaired(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    """The examples as KTOTrainer takes them: string prompt and completion, boolean label."""
    missing = [c for c in UNPAIRED_COLUMNS if c not in frame]
    if missing:
        raise ValueError(f"{where}: lacks column(s) {', '.join(missing)} (needs {', '.join(UNPAIRED_COLUMNS)})")
    labels = frame["label"]
    if labels.dtype != bool:
        if not labels.isin([0, 1]).all():
            bad = labels[~labels.isin([0, 1])]
            first = bad.iloc[0].item() if hasattr(bad.iloc[0], "item") else bad.iloc[0]  # 2, not np.int64(2)
            raise ValueError(
                f"{where}: column label must be boolean (or 0/1), found {first!r} "
                f"in row {bad.index[0]} ({len(bad)} such row(s))"
            )
        labels = labels.astype(bool)
    frame = frame.assign(label=labels)
    if len(frame) == 0 or frame["label"].all() or not frame["label"].any():
        raise ValueError(f"{where}: KTO needs both desirable (label true) and undesirable (label false) examples")
    for column in ("prompt", "completion"):
        if not frame[column].map(lambda v: isinstance(v, str)).all():
            raise ValueError(f"{where}: column {column} must hold strings (plain-text prompts and completions)")
    return frame.reset_index(drop=True)


def read_unpaired(source: str, split: str) -> pd.DataFrame:
    """A local file (parquet, jsonl, csv) or a Hub dataset (with network access), checked."""
    if is_local_file(source):
        frame = read_unpaired_file(Path(source))
    else:
        from datasets import load_dataset

        frame = load_dataset(source, split=split).to_pandas()
    return check_unpaired(frame, source)


def unpair(pairs: pd.DataFrame, *, examples_per_pair: str, seed: int) -> pd.DataFrame:
    """Preference pairs -> unpaired examples: the chosen response desirable, the rejected one
    undesirable (TRL's `unpair_preference_dataset` does the split); with `one`, a single,
    randomly chosen half of each pair, so that no prompt appears with both labels."""
    from datasets import Dataset
    from trl.data_utils import unpair_preference_dataset

    halves = unpair_preference_dataset(
        Dataset.from_pandas(pairs[["pair_id", "prompt", "chosen", "rejected"]], preserve_index=False)
    )
    frame = halves.to_pandas()  # rows: every pair's chosen half, then every pair's rejected half
    if examples_per_pair == "one":
        keep_chosen = np.random.default_rng(seed).random(len(pairs)) < 0.5
        keep = dict(zip(pairs["pair_id"], keep_chosen))
        frame = frame[frame["pair_id"].map(keep) == frame["label"]]
    elif examples_per_pair != "both":
        raise ValueError(f"examples_per_pair: must be 'both' or 'one', got {examples_per_pair!r}")
    frame = frame.drop_duplicates(["prompt", "completion", "label"])
    return check_unpaired(frame[["pair_id", *UNPAIRED_COLUMNS]], "pairs")


def training_order(examples: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The examples in a seeded random order. KTOTrainer reads its dataset in order (its KL
    term pairs each example with a neighbour's completion within a fixed-order batch) and
    `unpair` lists every desirable half before every undesirable one: unshuffled, the first
    batches would hold one label only."""
    return examples.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def unpaired_stats(examples: pd.DataFrame, *, desirable_weight: float, undesirable_weight: float) -> dict:
    """Counts and the KTO paper's check on the weights (its Eq. 8): lambda_D n_D / (lambda_U n_U)
    should lie in [1, 4/3]."""
    n_desirable = int(examples["label"].sum())
    n_undesirable = int(len(examples) - n_desirable)
    ratio = desirable_weight * n_desirable / (undesirable_weight * n_undesirable)
    return {
        "examples": int(len(examples)),
        "desirable": n_desirable,
        "undesirable": n_undesirable,
        "prompts": int(examples["prompt"].nunique()),
        "prompts_with_both_labels": int(examples.groupby("prompt")["label"].nunique().eq(2).sum()),
        "weighted_ratio": ratio,
        "weighted_ratio_in_recommended_range": bool(1.0 <= ratio <= 4 / 3),
    }


def make_examples(
    settings: dict, *, pairs_file: Path | None, examples_file: Path, stats_file: Path, log: bool = True
) -> dict:
    """The kto_examples job: KTO's unpaired examples from the study's pairs (`unpair`) or from the
    variant's `unpaired_data`, with their stats (the weighted desirable/undesirable ratio against the
    KTO paper's recommended [1, 4/3] is reported, not refused); `settings` the variant's entry."""
    import json

    import mlflow

    if settings.get("unpaired_data") is None:
        examples = unpair(
            pd.read_parquet(pairs_file), examples_per_pair=settings["examples_per_pair"], seed=settings["unpair_seed"]
        )
        source = "pairs"
    else:
        examples = read_unpaired(settings["unpaired_data"], settings["unpaired_split"])
        source = settings["unpaired_data"]
    stats = {
        "source": source,
        **unpaired_stats(
            examples, desirable_weight=settings["desirable_weight"], undesirable_weight=settings["undesirable_weight"]
        ),
    }
    if not stats["weighted_ratio_in_recommended_range"]:
        print(
            "KTO weights: desirable_weight*n_desirable / (undesirable_weight*n_undesirable) = "
            f"{stats['weighted_ratio']:.3f}, "
            "outside the KTO paper's recommended [1, 4/3]"
        )
    examples.to_parquet(examples_file, index=False)
    Path(stats_file).write_text(json.dumps(stats, indent=2))
    if log:
        mlflow.log_metrics({k: float(v) for k, v in stats.items() if isinstance(v, (int, float))})
        mlflow.log_dict(stats, "unpaired_stats.json")
    return stats
