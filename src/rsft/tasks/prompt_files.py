"""Reading a file of prompts (``task.path``, ``task.test_path``) into rows, each with where it came from.

Formats, by name: ``.jsonl`` (one JSON object per line; also ``.json`` holding JSON lines or one array of
objects), ``.csv`` (a header line, then rows; Python's ``csv`` module), each optionally gzip-compressed
(``.jsonl.gz``, ``.csv.gz``); ``.parquet`` (``pyarrow``); a directory written by ``datasets``'
``save_to_disk`` (one split: for a ``DatasetDict``, the directory of the split, e.g. ``DIR/train``).
``pyarrow`` and ``datasets`` are the optional extra ``prompts`` and are imported only for those formats.

Every row keeps its place for error messages: ``line N`` in a text file (1-based, the header included),
``row N`` in Parquet and ``datasets`` files (1-based).
"""

from __future__ import annotations

import csv
import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

TEXT_SUFFIXES = (".jsonl", ".json", ".csv")
SUFFIXES = (*TEXT_SUFFIXES, *(s + ".gz" for s in TEXT_SUFFIXES), ".parquet")
EXTRA = "pip install 'rsft[prompts]'"


@dataclass
class PromptFile:
    """The rows of one file: ``rows[i]`` was read at ``where[i]``; ``columns`` in the file's order."""

    path: Path
    kind: str  # jsonl, json, csv, parquet, datasets
    columns: list[str]
    rows: list[dict[str, Any]]
    where: list[str]


def read_prompt_file(path: str, key: str) -> PromptFile:
    """Read the file ``path`` that the config key ``key`` (``task.path``, ``task.test_path``) names."""
    if not isinstance(path, str) or not path:
        raise ValueError(
            f"{key} must name a prompt file (JSONL, CSV, Parquet or a save_to_disk directory), got {path!r}"
        )
    file = Path(path).expanduser()
    if file.is_dir():
        return _read_saved_dataset(file, key)
    if not file.is_file():
        raise FileNotFoundError(f"{key}={path!r} does not exist; give a JSONL, CSV or Parquet file or a directory")
    name = file.name.lower()
    if name.endswith(".parquet"):
        return _read_parquet(file, key)
    suffix = next((s for s in TEXT_SUFFIXES if name.endswith(s) or name.endswith(s + ".gz")), None)
    if suffix is None:
        raise ValueError(
            f"{key}={path!r}: rsft reads files named {', '.join(SUFFIXES)} or a directory written by datasets' "
            "save_to_disk; rename the file to its format's suffix"
        )
    with _open_text(file, key) as handle:
        try:
            if suffix == ".csv":
                return _read_csv(file, handle, key)
            return _read_json(file, handle, key)
        except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as err:
            raise ValueError(f"{key}={path!r} cannot be read as UTF-8 text: {err}") from err


def _open_text(file: Path, key: str) -> TextIO:
    if file.name.lower().endswith(".gz"):
        return gzip.open(file, "rt", encoding="utf-8", newline="")
    return file.open("r", encoding="utf-8", newline="")


def _read_json(file: Path, handle: TextIO, key: str) -> PromptFile:
    text = handle.read()
    if text.lstrip().startswith("["):  # one JSON array of objects
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{key}={str(file)!r}: not valid JSON at line {err.lineno}: {err.msg}") from err
        return _from_records(file, "json", items, [f"item {i}" for i in range(1, len(items) + 1)], key)
    rows, where = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{key}={str(file)!r}: line {number} is not valid JSON ({err.msg} at column {err.colno}); every "
                "line must be one JSON object"
            ) from err
        where.append(f"line {number}")
    return _from_records(file, "jsonl", rows, where, key)


def _from_records(file: Path, kind: str, rows: list[Any], where: list[str], key: str) -> PromptFile:
    columns: dict[str, None] = {}
    for row, place in zip(rows, where):
        if not isinstance(row, dict):
            raise ValueError(
                f"{key}={str(file)!r}: {place} is {type(row).__name__}, not a JSON object of columns "
                '(e.g. {"question": "...", "answer": "..."})'
            )
        columns.update(dict.fromkeys(row))
    return PromptFile(file, kind, list(columns), rows, where)


def _read_csv(file: Path, handle: TextIO, key: str) -> PromptFile:
    reader = csv.DictReader(handle)
    rows, where = [], []
    try:
        reader.fieldnames  # noqa: B018 - reads the header, so line_num counts from the first row
        last = reader.line_num
        for row in reader:
            first, last = last + 1, reader.line_num  # a quoted cell may span lines: name the row's first
            if None in row:  # more cells than the header has columns
                raise ValueError(
                    f"{key}={str(file)!r}: line {first} has {len(reader.fieldnames or []) + len(row[None])} "
                    f"cells but the header has {len(reader.fieldnames or [])} columns; quote cells that hold commas"
                )
            rows.append(row)
            where.append(f"line {first}")
    except csv.Error as err:
        raise ValueError(f"{key}={str(file)!r}: line {reader.line_num} is not valid CSV: {err}") from err
    return PromptFile(file, "csv", list(reader.fieldnames or []), rows, where)


def _read_parquet(file: Path, key: str) -> PromptFile:
    try:
        import pyarrow.parquet as parquet
    except ImportError as err:
        raise ImportError(f"{key}={str(file)!r} is a Parquet file: reading it needs pyarrow: {EXTRA}") from err
    try:
        table = parquet.read_table(file)
    except Exception as err:  # noqa: BLE001 - pyarrow raises its own error types for a broken file
        raise ValueError(f"{key}={str(file)!r} cannot be read as Parquet: {err}") from err
    rows = table.to_pylist()
    return PromptFile(file, "parquet", list(table.column_names), rows, [f"row {i}" for i in range(1, len(rows) + 1)])


def _read_saved_dataset(directory: Path, key: str) -> PromptFile:
    if (directory / "dataset_dict.json").is_file():
        splits = json.loads((directory / "dataset_dict.json").read_text()).get("splits", [])
        example = splits[0] if splits else "train"
        raise ValueError(
            f"{key}={str(directory)!r} is a DatasetDict saved with save_to_disk (splits {splits}); point {key} at "
            f"the directory of one split, e.g. {key}={str(directory / example)}"
        )
    if not (directory / "state.json").is_file():
        raise ValueError(
            f"{key}={str(directory)!r} is a directory but not one written by datasets' save_to_disk (it has no "
            "state.json); give a JSONL, CSV or Parquet file, or the directory save_to_disk wrote"
        )
    try:
        import datasets
    except ImportError as err:
        raise ImportError(
            f"{key}={str(directory)!r} was written by save_to_disk: reading it needs datasets: {EXTRA}"
        ) from err
    dataset = datasets.load_from_disk(str(directory))
    rows = dataset.to_list()
    return PromptFile(
        directory, "datasets", list(dataset.column_names), rows, [f"row {i}" for i in range(1, len(rows) + 1)]
    )
