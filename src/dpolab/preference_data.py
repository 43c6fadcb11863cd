"""Preference datasets as they come (HH-RLHF, UltraFeedback-binarized, TL;DR, a user's file):
read, map to the columns TRL's DPOTrainer takes (prompt, chosen, rejected), checked row by row,
split and subsampled, and written as the data stage of a study whose pairs are given rather than
made (`data.source: preferences`, `build`).

Both formats TRL knows are accepted:
- standard: `prompt`, `chosen`, `rejected` are strings;
- conversational: each is a list of `{"role", "content"}` messages (the prompt ends with a user
  turn, each response is the assistant's turn(s)).
A dataset without a prompt column (Anthropic-HH: whole conversations in `chosen` and
`rejected`) gets its prompt from TRL's `extract_prompt` (the longest shared prefix).

Problems with a file (missing, unreadable, lacking columns) are ValueErrors naming the file;
problems with a row name the row (its position in the file, from 0).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from dpolab.pairs import pair_stats

FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
COLUMNS = ("prompt", "chosen", "rejected")
ROLES = ("system", "user", "assistant")


# ---- reading ---------------------------------------------------------------------------------
def is_local(source: str) -> bool:
    """A file with a data suffix, or a folder (written by datasets' save_to_disk)."""
    path = Path(source).expanduser()
    return path.suffix in FILE_SUFFIXES or path.is_dir()


def read_table(source: str, *, split: str | None = None, revision: str | None = None) -> pd.DataFrame:
    """A local file or save_to_disk folder, or a Hub dataset (network) split, as a DataFrame."""
    path = Path(source).expanduser()
    if path.is_dir():
        from datasets import DatasetDict, load_from_disk

        try:
            loaded = load_from_disk(str(path))
        except Exception as error:
            raise ValueError(f"cannot read {path} as a datasets folder (save_to_disk): {first_line(error)}") from None
        if isinstance(loaded, DatasetDict):
            if split is None or split not in loaded:
                raise ValueError(f"{path} holds splits {', '.join(loaded)}; name one (split)")
            loaded = loaded[split]
        return loaded.to_pandas()
    if path.suffix in FILE_SUFFIXES:
        if not path.is_file():
            raise ValueError(f"{path} is not a file")
        readers: dict[str, Callable[[Path], pd.DataFrame]] = {
            ".jsonl": lambda p: pd.read_json(p, lines=True, precise_float=True),
            ".json": lambda p: pd.DataFrame(json.loads(p.read_text(encoding="utf-8"))),
            ".parquet": pd.read_parquet,
            ".csv": pd.read_csv,
        }
        try:
            return readers[path.suffix](path)
        except Exception as error:
            raise ValueError(f"cannot read {path} as {path.suffix[1:]}: {first_line(error)}") from None
    from datasets import load_dataset

    try:
        return load_dataset(source, split=split or "train", revision=revision).to_pandas()
    except Exception as error:
        raise ValueError(
            f"cannot load Hub dataset {source!r} (split {split or 'train'!r}): {first_line(error)}; "
            "offline, use a local copy (save_to_disk folder or file)"
        ) from None


def first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def file_columns(path: Path) -> list[str]:
    """Column names of a local file without reading its data (for the config check)."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    if path.suffix == ".csv":
        return pd.read_csv(path, nrows=0).columns.tolist()
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as handle:
            first = handle.readline()
        row = json.loads(first) if first.strip() else {}
        return list(row) if isinstance(row, dict) else []
    return list(read_table(str(path)).columns)


def first_row(path: Path) -> dict | None:
    """A local file's first row (None when it has none) without reading the rest (for the config check)."""
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise ValueError("each line must be a JSON object")
                    return row
        return None
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.ParquetFile(path)
        if table.metadata.num_rows == 0:
            return None
        return next(table.iter_batches(batch_size=1)).to_pylist()[0]
    if path.suffix == ".csv":
        frame = pd.read_csv(path, nrows=1)
        return frame.iloc[0].to_dict() if len(frame) else None
    rows = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(rows, dict):  # column-oriented JSON
        return (
            {k: v[0] for k, v in rows.items()}
            if rows and all(isinstance(v, list) and v for v in rows.values())
            else None
        )
    return rows[0] if rows else None


def check_columns(columns: list[str], mapping: Mapping[str, str], where: str) -> None:
    """The mapped columns must be there; a missing prompt column is fine when chosen and rejected
    hold whole conversations (the prompt is their shared beginning)."""
    needed = [mapping.get(c, c) for c in ("chosen", "rejected")]
    missing = [c for c in needed if c not in columns]
    if missing:
        raise ValueError(
            f"{where}: lacks column(s) {', '.join(missing)} (has {', '.join(map(str, columns)) or 'none'}); "
            "map yours with columns: {prompt: ..., chosen: ..., rejected: ...}"
        )


# ---- the three columns, checked row by row ------------------------------------------------------
def to_pairs(frame: pd.DataFrame, mapping: Mapping[str, str] | None = None) -> pd.DataFrame:
    """`frame` with its columns mapped to prompt, chosen, rejected (an implicit prompt extracted),
    a `row` column (position in the source) and a `format` attribute: standard or conversational."""
    mapping = dict(mapping or {})
    if "prompt" in mapping and mapping["prompt"] is None:
        # the prompt is the conversations' shared beginning; a prompt column of the dataset (e.g.
        # UltraFeedback-binarized's plain-text copy of the user turn) is left aside
        mapping.pop("prompt")
        frame = frame.drop(columns=["prompt"], errors="ignore")
    renamed = frame.rename(columns={source: target for target, source in mapping.items()})
    check_columns(list(renamed.columns), {}, "the dataset")
    pairs = renamed.reset_index(drop=True)
    pairs.insert(0, "row", np.arange(len(pairs)))
    if "prompt" not in pairs:
        from trl.data_utils import extract_prompt

        extracted = [extract_prompt({"chosen": c, "rejected": r}) for c, r in zip(pairs["chosen"], pairs["rejected"])]
        pairs = pairs.assign(
            prompt=[e["prompt"] for e in extracted],
            chosen=[e["chosen"] for e in extracted],
            rejected=[e["rejected"] for e in extracted],
        )
    pairs = pairs[["row", *COLUMNS]]
    pairs.attrs["format"] = check_rows(pairs)
    return pairs


def _is_messages(value) -> bool:
    return (
        isinstance(value, (list, tuple, np.ndarray)) and len(value) > 0 and all(isinstance(m, Mapping) for m in value)
    )


def check_rows(pairs: pd.DataFrame) -> str:
    """One format for every row, and each row well formed; returns the format. ValueError naming
    the first bad row (its `row`) and what is wrong with it."""
    first = pairs.iloc[0] if len(pairs) else None
    if first is None:
        raise ValueError("the dataset has no rows")
    conversational = _is_messages(first["chosen"])
    for record in pairs.itertuples(index=False):
        where = f"row {record.row}"
        for column in COLUMNS:
            value = getattr(record, column)
            if conversational:
                _check_messages(value, f"{where}, {column}", response=column != "prompt")
            elif not isinstance(value, str):
                kind = "a list of messages" if _is_messages(value) else type(value).__name__
                raise ValueError(
                    f"{where}, {column}: a string was expected (standard format, as row "
                    f"{pairs['row'].iloc[0]}), found {kind}"
                )
        if not conversational and not record.chosen.strip():
            raise ValueError(f"{where}, chosen: empty response")
    return "conversational" if conversational else "standard"


def _check_messages(value, where: str, *, response: bool) -> None:
    if not _is_messages(value):
        found = "a string" if isinstance(value, str) else f"{type(value).__name__}"
        raise ValueError(
            f"{where}: a list of {{role, content}} messages was expected (conversational format), found {found}"
        )
    for index, message in enumerate(value):
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise ValueError(f"{where}, message {index}: unknown role {role!r} (roles: {', '.join(ROLES)})")
        if not isinstance(content, str):
            raise ValueError(f"{where}, message {index}: content must be a string, found {type(content).__name__}")
    last = value[-1]["role"]
    if response and last != "assistant":
        raise ValueError(f"{where}: the response must end with an assistant turn, ends with {last!r}")
    if not response and last != "user":
        raise ValueError(f"{where}: the prompt must end with a user turn, ends with {last!r}")


def _text(value) -> str:
    """A row's value as comparable text (the messages' JSON for conversational rows)."""
    return value if isinstance(value, str) else json.dumps([dict(m) for m in value], sort_keys=True)


def drop_ties(pairs: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Pairs whose chosen equals rejected teach nothing (their DPO gradient is zero): dropped and
    counted for the data card. Refused when every pair is one."""
    tied = np.array([_text(c) == _text(r) for c, r in zip(pairs["chosen"], pairs["rejected"])], dtype=bool)
    if len(pairs) and tied.all():
        raise ValueError(
            f"every one of the {len(pairs)} pairs has chosen == rejected: nothing to learn a preference from"
        )
    kept = pairs[~tied].reset_index(drop=True)
    kept.attrs.update(pairs.attrs)
    return kept, int(tied.sum())


def held_out_split(pairs: pd.DataFrame, test_fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and test pairs from one split: a seeded permutation, the first `test_fraction` held out.
    Every pair of a prompt goes to the same side, so no test prompt is trained on."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    prompts = pd.Series([_text(p) for p in pairs["prompt"]])
    unique = prompts.drop_duplicates().to_numpy()
    order = np.random.default_rng(seed).permutation(len(unique))
    n_test = max(1, round(len(unique) * test_fraction))
    if n_test >= len(unique):
        raise ValueError(f"test_fraction {test_fraction} of {len(unique)} prompts leaves none to train on")
    test_prompts = set(unique[order[:n_test]])
    is_test = prompts.isin(test_prompts).to_numpy()
    train, test = pairs[~is_test].reset_index(drop=True), pairs[is_test].reset_index(drop=True)
    train.attrs.update(pairs.attrs)
    test.attrs.update(pairs.attrs)
    return train, test


def subsample(pairs: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    """`n` pairs drawn without replacement (seeded), in their source order; all of them when n is None."""
    if n is None or n >= len(pairs):
        return pairs
    keep = np.sort(np.random.default_rng(seed).choice(len(pairs), size=n, replace=False))
    picked = pairs.iloc[keep].reset_index(drop=True)
    picked.attrs.update(pairs.attrs)
    return picked


def within_lengths(
    pairs: pd.DataFrame, count_tokens: Callable[[object], int], *, max_prompt_length: int | None, max_length: int | None
) -> tuple[pd.DataFrame, int]:
    """Pairs whose prompt (and prompt + longer response) fit the limits, in the policy's tokens
    (`count_tokens` of a value: a string, or messages through the chat template); the number
    dropped. Refused when none fits."""
    if max_prompt_length is None and max_length is None:
        return pairs, 0
    prompt_tokens = np.array([count_tokens(p) for p in pairs["prompt"]])
    response_tokens = np.array(
        [max(count_tokens(c), count_tokens(r)) for c, r in zip(pairs["chosen"], pairs["rejected"])]
    )
    fits = np.ones(len(pairs), dtype=bool)
    if max_prompt_length is not None:
        fits &= prompt_tokens <= max_prompt_length
    if max_length is not None:
        fits &= prompt_tokens + response_tokens <= max_length
    if len(pairs) and not fits.any():
        raise ValueError(
            f"no pair fits the length limits (max_prompt_length {max_prompt_length}, max_length "
            f"{max_length}); the shortest prompt has {prompt_tokens.min()} tokens"
        )
    kept = pairs[fits].reset_index(drop=True)
    kept.attrs.update(pairs.attrs)
    return kept, int((~fits).sum())


def card(pairs: pd.DataFrame, **counts: int) -> dict:
    """What the data card says about a split of pairs: size, format, lengths, and `counts` (e.g.
    ties dropped, too long dropped)."""

    def words(value) -> int:
        return len(value.split()) if isinstance(value, str) else sum(len(m["content"].split()) for m in value)

    chosen, rejected = [words(c) for c in pairs["chosen"]], [words(r) for r in pairs["rejected"]]
    return {
        "pairs": int(len(pairs)),
        "prompts": int(pd.Series([_text(p) for p in pairs["prompt"]]).nunique()),
        "format": pairs.attrs.get("format", "unknown"),
        "chosen_words_mean": float(np.mean(chosen)) if chosen else 0.0,
        "rejected_words_mean": float(np.mean(rejected)) if rejected else 0.0,
        "chosen_longer_share": float(np.mean(np.array(chosen) > np.array(rejected))) if chosen else 0.0,
        **{k: int(v) for k, v in counts.items()},
    }


# ---- the data stage of a preference study ---------------------------------------------------------
def instruction_text(prompt) -> str:
    """A prompt as a person reads it (what LLM judges see): the text of a standard prompt; the user's
    message of a one-turn conversation; else the conversation as `Role: content` paragraphs."""
    if isinstance(prompt, str):
        return prompt
    messages = [m for m in prompt if m["role"] != "system"]
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def response_text(response) -> str:
    """A response as text: the string, or the assistant turns' contents."""
    if isinstance(response, str):
        return response
    return "\n\n".join(m["content"] for m in response if m["role"] == "assistant")


class ChatRenderer:
    """Pairs as the policy reads them: standard rows as they are; conversational rows through the
    tokenizer's chat template (TRL's apply_chat_template, as its trainers do), the prompt ending with
    the assistant header and each response ending with the end-of-turn token, so that what DPO trains
    on is what generation produces (sampling stops at that token)."""

    def __init__(self, tokenizer, data_format: str, *, model_key: str = "model"):
        self.tokenizer, self.format = tokenizer, data_format
        # the length filter, the pairs' token counts and the test prompts' all count the same texts: once each
        self.count = functools.lru_cache(maxsize=None)(self._count)
        if data_format == "conversational" and not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                f"{model_key}: the model's tokenizer has no chat template, and the data is conversational "
                "(lists of role/content messages); use a model with one (an instruct model) or data in "
                "the standard format (strings)"
            )

    def pair(self, prompt, chosen, rejected) -> tuple[str, str, str]:
        if self.format == "standard":
            return prompt, chosen, rejected
        from trl.data_utils import apply_chat_template

        rendered = apply_chat_template(
            {"prompt": list(prompt), "chosen": list(chosen), "rejected": list(rejected)}, self.tokenizer
        )
        return rendered["prompt"], self._end_turn(rendered["chosen"]), self._end_turn(rendered["rejected"])

    def prompt(self, prompt) -> str:
        if self.format == "standard":
            return prompt
        from trl.data_utils import apply_chat_template

        return apply_chat_template({"prompt": list(prompt)}, self.tokenizer)["prompt"]

    def _end_turn(self, text: str) -> str:
        # templates add a newline after the end-of-turn token; generation stops at the token
        eos = self.tokenizer.eos_token
        stripped = text.rstrip("\n")
        return stripped if eos and stripped.endswith(eos) else text

    def _count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def read_pairs(
    source: str, split: str | None, revision: str | None, columns: Mapping[str, str], where: str
) -> pd.DataFrame:
    """A split of a preference dataset as checked pairs; errors start with `where` (the config key)."""
    try:
        return to_pairs(read_table(source, split=split, revision=revision), columns)
    except ValueError as error:
        raise ValueError(f"{where}: {source}: {error}") from None


def _unique_prompts(pairs: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct prompt (its first pair), in order."""
    keys = pd.Series([_text(p) for p in pairs["prompt"]])
    first = pairs[~keys.duplicated().to_numpy()].reset_index(drop=True)
    first.attrs.update(pairs.attrs)
    return first


def build(
    cfg, out: Mapping[str, Path], tokenizer, *, sft_source: str, sft_dataset: Mapping | None, reward_model: bool
) -> dict:
    """The data stage of a preference study. `cfg`: dpolab.settings.DataConfig; `out`: the paths of
    pairs, pair_stats, prompts_test, card, and (when used) sft_train, reward_train, reward_eval.
    `sft_source`: chosen, dataset or none. `reward_model`: hold out prompts for one. Returns the card."""
    columns = cfg.column_map
    train = read_pairs(cfg.path, cfg.train_split, cfg.revision, columns, "data.path")
    if cfg.test_split:
        test = read_pairs(cfg.path, cfg.test_split, cfg.revision, columns, "data.test_split")
        if test.attrs["format"] != train.attrs["format"]:
            raise ValueError(
                f"data.test_split: {cfg.test_split} is {test.attrs['format']}, {cfg.train_split} is "
                f"{train.attrs['format']}; both splits must have one format"
            )
    else:
        train, test = held_out_split(train, cfg.test_fraction, cfg.seed)
    data_format = train.attrs["format"]
    renderer = ChatRenderer(tokenizer, data_format)
    counts = {"rows_train_split": int(len(train)), "rows_test_split": int(len(test))}
    train, counts["ties_dropped_train"] = drop_ties(train)
    test, counts["ties_dropped_test"] = drop_ties(test)

    def rendered(pairs: pd.DataFrame) -> pd.DataFrame:
        texts = [renderer.pair(p, c, r) for p, c, r in zip(pairs["prompt"], pairs["chosen"], pairs["rejected"])]
        frame = pd.DataFrame(
            {
                "row": pairs["row"].to_numpy(),
                "prompt": [t[0] for t in texts],
                "chosen": [t[1] for t in texts],
                "rejected": [t[2] for t in texts],
                "instruction": [instruction_text(p) for p in pairs["prompt"]],
                "chosen_text": [response_text(c) for c in pairs["chosen"]],
                "rejected_text": [response_text(r) for r in pairs["rejected"]],
            }
        )
        frame.attrs.update(pairs.attrs)
        return frame

    train, test = rendered(train), rendered(test)
    train, counts["too_long_dropped_train"] = within_lengths(
        train, renderer.count, max_prompt_length=cfg.max_prompt_length, max_length=cfg.max_length
    )
    test, counts["too_long_dropped_test"] = within_lengths(
        test, renderer.count, max_prompt_length=cfg.max_prompt_length, max_length=cfg.max_length
    )
    reward_train = None
    if reward_model:  # prompts the policies never see: the reward model's own pairs
        train, reward_train = held_out_split(train, cfg.reward_fraction, cfg.seed + 1)
    policy_pairs = subsample(train, cfg.n_train, cfg.seed + 2)
    test_prompts = subsample(_unique_prompts(test), cfg.n_test, cfg.seed + 3)

    prompt_ids = {p: i for i, p in enumerate(dict.fromkeys(policy_pairs["prompt"]))}
    chosen_tokens = [renderer.count(c) for c in policy_pairs["chosen"]]
    rejected_tokens = [renderer.count(r) for r in policy_pairs["rejected"]]
    pairs = pd.DataFrame(
        {
            "pair_id": np.arange(len(policy_pairs)),
            "prompt_id": [prompt_ids[p] for p in policy_pairs["prompt"]],
            "prompt": policy_pairs["prompt"],
            "chosen": policy_pairs["chosen"],
            "rejected": policy_pairs["rejected"],
            "chosen_tokens": chosen_tokens,
            "rejected_tokens": rejected_tokens,
            "relabelled_for_length": False,
            "source_row": policy_pairs["row"],
        }
    )
    prompts = pd.DataFrame(
        {
            "prompt_id": np.arange(len(test_prompts)),
            "prompt": test_prompts["prompt"],  # what the policy reads (chat template applied)
            "instruction": test_prompts["instruction"],  # what an LLM judge reads
            "chosen": test_prompts["chosen_text"],
            "rejected": test_prompts["rejected_text"],
            "prompt_tokens": [renderer.count(p) for p in test_prompts["prompt"]],
            "source_row": test_prompts["row"],
        }
    )
    for name in ("pairs", "prompts_test"):
        Path(out[name]).parent.mkdir(parents=True, exist_ok=True)
    pairs.to_parquet(out["pairs"], index=False)
    prompts.to_parquet(out["prompts_test"], index=False)
    stats = {
        **pair_stats(pairs),
        "chosen_tokens_mean": float(np.mean(chosen_tokens)),
        "rejected_tokens_mean": float(np.mean(rejected_tokens)),
        "source": "dataset",
    }
    Path(out["pair_stats"]).write_text(json.dumps(stats, indent=2))

    sft_card = {"source": sft_source}
    if sft_source == "chosen":
        sft = pd.DataFrame({"prompt": pairs["prompt"], "completion": pairs["chosen"]})
        sft.to_parquet(out["sft_train"], index=False)
        sft_card["examples"] = int(len(sft))
    elif sft_source == "dataset":
        sft = sft_examples(sft_dataset, tokenizer, seed=cfg.seed + 4)
        sft.to_parquet(out["sft_train"], index=False)
        sft_card.update(
            examples=int(len(sft)), path=sft_dataset["path"], split=sft_dataset["split"], columns=list(sft.columns)
        )

    reward_card = None
    if reward_train is not None:
        reward_columns = ["prompt", "chosen", "rejected"]

        def as_judged(frame):  # the text a pointwise judge scores: the prompt, then the response's text
            return pd.DataFrame(
                {"prompt": frame["prompt"], "chosen": frame["chosen_text"], "rejected": frame["rejected_text"]}
            )

        as_judged(reward_train)[reward_columns].to_parquet(out["reward_train"], index=False)
        as_judged(test)[reward_columns].to_parquet(out["reward_eval"], index=False)
        reward_card = {
            "train": card(reward_train),
            "eval": card(test),
            "disjoint_from_policy_pairs": "by prompt (data.reward_fraction of the training split's prompts)",
        }

    summary = {
        "source": "preferences",
        "path": cfg.path,
        "revision": cfg.revision,
        "train_split": cfg.train_split,
        "test_split": cfg.test_split
        or f"held out: {cfg.test_fraction} of {cfg.train_split}'s prompts (seed {cfg.seed})",
        "format": data_format,
        "columns": dict(cfg.columns),
        "chat_template": data_format == "conversational",
        "counts": counts,
        "policy_pairs": card(policy_pairs),
        "test_prompts": int(len(prompts)),
        "test_pairs_for_judges": card(test),
        "prompt_tokens_mean": {
            "train": float(np.mean([renderer.count(p) for p in pairs["prompt"]])),
            "test": float(prompts["prompt_tokens"].mean()),
        },
        "sft": sft_card,
        "reward_model_pairs": reward_card,
        "prompt_examples": prompts["instruction"].head(5).tolist(),
    }
    Path(out["card"]).write_text(json.dumps(summary, indent=2, default=str))
    return summary


def sft_examples(dataset: Mapping, tokenizer, *, seed: int) -> pd.DataFrame:
    """A separate SFT dataset as SFTTrainer's columns: `text` (language modelling: plain text, or a
    `messages` conversation through the chat template) or `prompt` + `completion` (loss on the
    completion; conversational ones through the chat template)."""
    where = "sft.dataset.path"
    try:
        frame = read_table(dataset["path"], split=dataset["split"], revision=dataset.get("revision"))
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    frame = subsample(frame.reset_index(drop=True), dataset.get("n"), seed)
    if "messages" in frame:
        for row, messages in enumerate(frame["messages"]):
            _check_messages(messages, f"{where}: row {row}, messages", response=True)
        _need_template(tokenizer)
        return pd.DataFrame(
            {"text": [tokenizer.apply_chat_template([dict(m) for m in m_], tokenize=False) for m_ in frame["messages"]]}
        )
    if {"prompt", "completion"} <= set(frame.columns):
        if _is_messages(frame["prompt"].iloc[0]):
            from trl.data_utils import apply_chat_template

            _need_template(tokenizer)
            for row, (prompt, completion) in enumerate(zip(frame["prompt"], frame["completion"])):
                _check_messages(prompt, f"{where}: row {row}, prompt", response=False)
                _check_messages(completion, f"{where}: row {row}, completion", response=True)
            rendered = [
                apply_chat_template({"prompt": list(p), "completion": list(c)}, tokenizer)
                for p, c in zip(frame["prompt"], frame["completion"])
            ]
            return pd.DataFrame(
                {"prompt": [r["prompt"] for r in rendered], "completion": [r["completion"] for r in rendered]}
            )
        bad = [
            i
            for i, (p, c) in enumerate(zip(frame["prompt"], frame["completion"]))
            if not isinstance(p, str) or not isinstance(c, str)
        ]
        if bad:
            raise ValueError(
                f"{where}: row {bad[0]}: prompt and completion must be strings (or both lists of messages)"
            )
        return frame[["prompt", "completion"]].reset_index(drop=True)
    if "text" in frame:
        return frame[["text"]].reset_index(drop=True)
    raise ValueError(
        f"{where}: {dataset['path']} has columns {', '.join(map(str, frame.columns))}; an SFT dataset needs "
        "a messages column, prompt and completion columns, or a text column"
    )


def _need_template(tokenizer) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("model: the model's tokenizer has no chat template, and sft.dataset is conversational")


def make_preference_data(study, out: Mapping[str, Path], base_dir: Path, *, log: bool = True) -> dict:
    """The data job of a preference study: build() with the base model's tokenizer (lengths and the
    chat template are the policy's); with `log`, the counts and the data card (out["card"]) to the
    active MLflow run. Returns the card."""
    from transformers import AutoTokenizer

    card = build(
        study.data,
        out,
        AutoTokenizer.from_pretrained(base_dir),
        sft_source=study.sft_source,
        sft_dataset=study.sft_data.dataset,
        reward_model=study.trains_reward_model,
    )
    if log:
        import mlflow

        counts = {"policy_pairs": card["policy_pairs"]["pairs"], "test_prompts": card["test_prompts"]}
        mlflow.log_metrics({**counts, **card["counts"]})
        mlflow.log_artifact(str(out["card"]))
    return card
