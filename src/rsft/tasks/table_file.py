"""``task.data.dataset=file``: a user's own table (CSV, CSV.gz, JSON Lines, Parquet) as a decision table.

The file is only read. Every choice made from it is inferred here and recorded (``TabularTable.choices``,
written to the run dir as ``data_choices.json``):

- columns: the label (``task.data.label``), the sensitive attribute(s) (``task.data.sensitive``: one column
  or a list, whose value tuple is the group), the features (``task.data.features``, or every other column
  but the label and ``task.data.drop``);
- the label: 1 = the value ``task.data.favorable`` (every other value 0), or the column itself when it is 0/1;
- types: a column is numeric when every value parses as a finite number (the split standardises it with the
  training rows' mean and sd), otherwise categorical (one-hot, 0/1, one column per value); the columns named
  in ``task.data.categorical`` and the sensitive columns are always categorical;
- missing values (empty cells, ``NA``, ``N/A``, ``NaN``, ``null``, ``?``, JSON ``null``): rows holding one in a
  column that is used are dropped and counted per column, or refused with ``task.data.missing=error``.

Errors name the key to fix, the columns found, and for a file that does not parse, the line (CSV, JSON
Lines) or row (Parquet) where it stops.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rsft.tasks.decision_table import TabularTable, one_hot, open_text

#: Cell texts read as a missing value (besides JSON null and a float NaN).
MISSING_MARKERS = ("", "NA", "N/A", "NaN", "nan", "null", "NULL", "?")
#: File name endings and the format each is read as.
FORMATS = {
    ".csv": "csv",
    ".csv.gz": "csv",
    ".jsonl": "jsonl",
    ".jsonl.gz": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
MISSING_POLICIES = ("drop", "error")


def text_of(value: Any) -> str | None:
    """A cell as text (None when missing): how categories, groups and label values are named and compared.
    Numbers print without a trailing ``.0`` when integral, booleans as ``true``/``false`` (JSON's spelling)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    text = str(value).strip()
    return None if text in MISSING_MARKERS else text


def number_of(value: Any) -> float | None:
    """The cell as a finite number, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def sort_levels(values: Sequence[str]) -> list[str]:
    """Distinct values, numbers in numeric order first, then the rest alphabetically."""

    def key(text: str) -> tuple:
        number = number_of(text)
        return (0, number, text) if number is not None else (1, 0.0, text)

    return sorted(set(values), key=key)


# -- reading ------------------------------------------------------------------------------------------
def file_format(path: Path) -> str:
    name = path.name.lower()
    for ending in sorted(FORMATS, key=len, reverse=True):
        if name.endswith(ending):
            return FORMATS[ending]
    raise ValueError(
        f"task.data.path={str(path)!r}: rsft reads {', '.join(FORMATS)} files; rename the file to the ending of "
        "its format"
    )


def _unreadable(path: Path, fmt: str, where: str) -> ValueError:
    return ValueError(f"task.data.path={str(path)!r} does not parse as {fmt}: {where}; fix the file")


def _read_csv(path: Path) -> tuple[dict[str, list[Any]], list[str]]:
    columns: dict[str, list[Any]] = {}
    places: list[str] = []
    reader = None
    try:
        with open_text(path) as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise ValueError(f"task.data.path={str(path)!r} is empty: give a CSV file with a header line")
            header = [name.strip() for name in header]
            _check_header(path, header)
            columns = {name: [] for name in header}
            lists = list(columns.values())
            for record in reader:
                if not record or (len(record) == 1 and not record[0].strip()):
                    continue  # a blank line
                if len(record) != len(header):
                    raise _unreadable(
                        path,
                        "CSV",
                        f"line {reader.line_num} has {len(record)} fields where the header (line 1) has {len(header)} "
                        "(a comma inside a value must be quoted)",
                    )
                for values, cell in zip(lists, record):
                    values.append(cell)
                places.append(f"line {reader.line_num}")
    except csv.Error as err:
        raise _unreadable(path, "CSV", f"line {reader.line_num if reader else 1}: {err}") from err
    except UnicodeDecodeError as err:
        line = (reader.line_num + 1) if reader else 1
        raise _unreadable(path, "CSV", f"line {line} is not UTF-8 text ({err.reason})") from err
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise _unreadable(path, "gzip-compressed CSV", f"{type(err).__name__}: {err}") from err
    return columns, places


def _read_jsonl(path: Path) -> tuple[dict[str, list[Any]], list[str]]:
    records: list[dict[str, Any]] = []
    places: list[str] = []
    number = 0
    try:
        with open_text(path) as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line.rstrip("\r\n"))  # without the newline, the column is the line's
                except json.JSONDecodeError as err:
                    raise _unreadable(path, "JSON Lines", f"line {number}: {err.msg} (column {err.colno})") from err
                if not isinstance(record, dict):
                    raise _unreadable(
                        path, "JSON Lines", f"line {number} is a {type(record).__name__}, not an object of columns"
                    )
                records.append(record)
                places.append(f"line {number}")
    except UnicodeDecodeError as err:
        raise _unreadable(path, "JSON Lines", f"line {number + 1} is not UTF-8 text ({err.reason})") from err
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise _unreadable(path, "gzip-compressed JSON Lines", f"{type(err).__name__}: {err}") from err
    names = list(dict.fromkeys(name for record in records for name in record))
    return {name: [record.get(name) for record in records] for name in names}, places


def _read_parquet(path: Path) -> tuple[dict[str, list[Any]], list[str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError(
            f"task.data.path={str(path)!r} is a Parquet file, which needs pyarrow: pip install 'rsft[parquet]'"
        ) from err
    try:
        table = pq.read_table(path)
    except Exception as err:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ... for a broken file
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise _unreadable(path, "Parquet", first) from err
    _check_header(path, list(table.column_names))
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    return columns, [f"row {i + 1}" for i in range(table.num_rows)]


def _check_header(path: Path, header: list[str]) -> None:
    seen: set[str] = set()
    for position, name in enumerate(header, 1):
        if not name:
            raise _unreadable(path, "a table", f"column {position} of the header has no name")
        if name in seen:
            raise _unreadable(path, "a table", f"the column name {name!r} appears twice in the header")
        seen.add(name)


READERS = {"csv": _read_csv, "jsonl": _read_jsonl, "parquet": _read_parquet}


def read_table_file(path: Path) -> tuple[dict[str, list[Any]], list[str], str]:
    """The file's columns (name → raw cells), where each row is in the file (``line 7``, ``row 3``), the format."""
    fmt = file_format(path)
    columns, places = READERS[fmt](path)
    if not places:
        raise ValueError(f"task.data.path={str(path)!r} has no rows: give a file with a header and at least one row")
    return columns, places, fmt


# -- from columns to a decision table -----------------------------------------------------------------
def _names(value: str | Sequence[str] | None, key: str) -> list[str]:
    if value is None:
        return []
    names = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{key}={value!r} must be a column name or a list of column names")
    return names


def _require_columns(names: list[str], key: str, path: Path, found: list[str]) -> None:
    for name in names:
        if name not in found:
            shown = repr(names[0]) if len(names) == 1 and key != "task.data.sensitive" else repr(name)
            raise ValueError(
                f"{key}={shown} is not a column of {str(path)!r}; the columns found: {found}: set {key} to one of them"
            )


def _label(values: list[str], column: str, favorable: Any) -> tuple[np.ndarray, dict[str, Any]]:
    counts = {v: values.count(v) for v in sort_levels(values)}
    if favorable is not None:
        wanted = text_of(favorable)
        wanted_number = number_of(wanted) if wanted is not None else None

        def is_favorable(v: str) -> bool:
            return v == wanted or (wanted_number is not None and number_of(v) == wanted_number)

        y = np.array([is_favorable(v) for v in values], dtype=np.int64)
        if not y.any():
            raise ValueError(
                f"task.data.favorable={favorable!r} is not a value of the label column {column!r} (its values: "
                f"{list(counts)[:20]}); set task.data.favorable to the favourable one"
            )
        if y.all():
            raise ValueError(
                f"task.data.favorable={favorable!r}: every row of the label column {column!r} has it; both outcomes "
                "must occur"
            )
        rule = f"1 (favourable) when {column} = {wanted}, else 0"
        return y, {"column": column, "favorable": wanted, "values": counts, "rule": rule}
    numbers = [number_of(v) for v in values]
    if len(counts) == 2 and all(n in (0.0, 1.0) for n in numbers):
        rule = f"the column as it is: 1 = favourable ({column} is 0/1; set task.data.favorable=0 if 0 is)"
        return np.array(numbers, dtype=np.int64), {"column": column, "favorable": "1", "values": counts, "rule": rule}
    if len(counts) < 2:
        raise ValueError(
            f"task.data.label={column!r} takes the one value {list(counts)}: both outcomes must occur in the file"
        )
    example = max(counts, key=lambda v: (counts[v], v))
    raise ValueError(
        f"task.data.favorable must be set: the label column {column!r} takes the {len(counts)} values "
        f"{list(counts)[:20]}, not 0/1; set task.data.favorable to the favourable one (e.g. "
        f"task.data.favorable={example}; every other value is then unfavourable)"
    )


def _feature_block(
    name: str, values: list[str], categorical: bool, max_categories: int
) -> tuple[np.ndarray, list[str], bool, dict[str, Any]]:
    """(columns, their names, standardise them?, the record of the choice) for one feature column."""
    numbers = [number_of(v) for v in values]
    if not categorical and all(n is not None for n in numbers):
        return np.array(numbers, dtype=np.float64)[:, None], [name], True, {"column": name, "type": "numeric"}
    categories = sort_levels(values)
    if len(categories) > max_categories:
        raise ValueError(
            f"task.data: the column {name!r} has {len(categories)} distinct values, so one-hot coding would make as "
            f"many features; leave it out (task.data.drop=[{name}]) or raise task.data.max_categories "
            f"(now {max_categories})"
        )
    block, names = one_hot(values, name, categories)
    return block, names, False, {"column": name, "type": "categorical", "categories": categories}


def load_file_table(
    path: str | Path | None,
    label: str | None,
    favorable: Any,
    sensitive: str | Sequence[str] | None,
    features: Sequence[str] | None = None,
    drop: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    missing: str = "drop",
    max_categories: int = 100,
) -> TabularTable:
    """A user's file as a :class:`TabularTable`, every inferred choice in ``table.choices`` (module docstring)."""
    if path is None:
        raise ValueError(
            "task.data.dataset=file needs task.data.path=FILE (a .csv, .csv.gz, .jsonl or .parquet file of rows)"
        )
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"task.data.path={str(path)!r} is not a file; give the path of your table")
    if missing not in MISSING_POLICIES:
        raise ValueError(f"task.data.missing={missing!r} must be one of {', '.join(MISSING_POLICIES)}")
    if not isinstance(max_categories, int) or max_categories < 2:
        raise ValueError(f"task.data.max_categories={max_categories!r} must be an integer ≥ 2")
    columns, places, fmt = read_table_file(path)
    found = list(columns)
    if label is None:
        raise ValueError(f"task.data.label must be set to the column holding the outcome; the columns found: {found}")
    _require_columns([label], "task.data.label", path, found)
    groups = _names(sensitive, "task.data.sensitive")
    if not groups:
        raise ValueError(
            f"task.data.sensitive must name the column(s) whose values are the groups; the columns found: {found}"
        )
    _require_columns(groups, "task.data.sensitive", path, found)
    if label in groups:
        raise ValueError(f"task.data.sensitive={groups} includes the label column {label!r}: choose other columns")
    chosen, dropped = _names(features, "task.data.features"), _names(drop, "task.data.drop")
    forced = _names(categorical, "task.data.categorical")
    if chosen and dropped:
        raise ValueError(
            "give task.data.features (the columns to use) or task.data.drop (the ones to leave out), not both"
        )
    for key, names in (("task.data.features", chosen), ("task.data.drop", dropped), ("task.data.categorical", forced)):
        _require_columns(names, key, path, found)
    if label in chosen:
        raise ValueError(f"task.data.features={chosen} includes the label column {label!r}: remove it")
    feature_names = chosen or [c for c in found if c != label and c not in dropped]
    if not feature_names:
        raise ValueError(f"no feature columns are left (the columns found: {found}); use fewer task.data.drop columns")

    used = list(dict.fromkeys([label, *groups, *feature_names]))
    texts = {c: [text_of(v) for v in columns[c]] for c in used}
    missing_rows = {c: [i for i, v in enumerate(texts[c]) if v is None] for c in used}
    missing_rows = {c: rows for c, rows in missing_rows.items() if rows}
    bad = sorted({i for rows in missing_rows.values() for i in rows})
    if bad and missing == "error":
        per_column = ", ".join(f"{c!r}: {len(rows)}" for c, rows in missing_rows.items())
        raise ValueError(
            f"task.data.missing=error: {len(bad)} row(s) of {str(path)!r} have missing values ({per_column}; the first "
            f"at {places[bad[0]]}); fill them in, or set task.data.missing=drop to drop those rows"
        )
    keep = np.ones(len(places), dtype=bool)
    keep[bad] = False
    if not keep.any():
        raise ValueError(f"every row of {str(path)!r} has a missing value in a used column ({list(missing_rows)})")
    texts = {c: [v for v, k in zip(values, keep) if k] for c, values in texts.items()}

    y, label_record = _label(texts[label], label, favorable)
    attributes, levels = {}, {}
    for column in groups:
        levels[column] = tuple(sort_levels(texts[column]))
        index = {level: i for i, level in enumerate(levels[column])}
        attributes[column] = np.array([index[v] for v in texts[column]], dtype=np.int64)
    blocks, names, standardise, records = [], [], [], []
    for column in feature_names:
        block, block_names, scaled, record = _feature_block(
            column, texts[column], column in forced or column in groups, max_categories
        )
        if column in groups:
            record["reason"] = "a sensitive attribute: always categorical"
        elif column in forced:
            record["reason"] = "task.data.categorical"
        elif record["type"] == "categorical":
            record["reason"] = "values that are not all numbers"
        blocks.append(block)
        names += block_names
        standardise += [scaled] * len(block_names)
        records.append(record)
    choices = {
        "source": {"path": str(path), "format": fmt, "rows_read": len(places), "missing_markers": MISSING_MARKERS},
        "rows_dropped": {
            "policy": f"task.data.missing={missing}",
            "rows": len(bad),
            "by_column": {c: len(rows) for c, rows in missing_rows.items()},
        },
        "rows_used": int(keep.sum()),
        "label": label_record,
        "sensitive": groups,
        "features": records,
        "feature_columns_after_coding": len(names),
    }
    return TabularTable(
        name=path.name,
        features=np.concatenate(blocks, axis=1),
        feature_names=tuple(names),
        label=y,
        attributes=attributes,
        levels=levels,
        standardise=tuple(standardise),
        choices=choices,
    )
