"""The decision table: features, a binary label and the group attributes, and how attributes become groups.

A :class:`TabularTable` is what every decision dataset is read into (the shipped ones by
:mod:`rsft.tasks.decision_data`, a user's file by :mod:`rsft.tasks.table_file`). Each sensitive attribute is
stored as integer codes with the names of its levels; the *group* of a row is the tuple of its levels over
the attributes chosen (``task.data.sensitive``: one attribute, or several for intersectional groups), and
groups are numbered in the sorted order of those tuples (:func:`encode_groups`). For one shipped binary
attribute that numbering is the attribute itself: s = 0 unprivileged, s = 1 privileged.
"""

from __future__ import annotations

import gzip
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TabularTable:
    """A preprocessed dataset: ``features`` (n, d), ``label`` (n,) in {0, 1}, group ``attributes``.

    ``attributes``: per attribute, integer codes (n,) indexing ``levels[attribute]`` (the level names; default
    ``"0"``, ``"1"``, ...). ``privileged``: for the shipped binary attributes, the code of the privileged group,
    the reference of the parity figures. ``standardise``: which feature columns a split standardises (None:
    all, as AIF360's demo does). ``choices``: what was inferred from a user's file (``data_choices.json``).
    """

    name: str
    features: np.ndarray
    feature_names: tuple[str, ...]
    label: np.ndarray
    attributes: dict[str, np.ndarray] = field(default_factory=dict)
    levels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    privileged: dict[str, int] = field(default_factory=dict)
    standardise: tuple[bool, ...] | None = None
    choices: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.features.shape[0]
        if self.features.ndim != 2 or self.features.shape[1] != len(self.feature_names):
            raise ValueError(
                f"{self.name}: features of shape {self.features.shape} for {len(self.feature_names)} names"
            )
        if self.label.shape != (n,) or any(a.shape != (n,) for a in self.attributes.values()):
            raise ValueError(f"{self.name}: label and attributes must have one entry per row ({n})")
        if self.standardise is not None and len(self.standardise) != len(self.feature_names):
            raise ValueError(f"{self.name}: standardise has {len(self.standardise)} flags for {n} feature columns")
        levels = dict(self.levels)
        for name, codes in self.attributes.items():
            if codes.size and codes.min() < 0:
                raise ValueError(f"{self.name}: attribute {name!r} has negative codes")
            count = int(codes.max()) + 1 if codes.size else 0
            levels.setdefault(name, tuple(str(i) for i in range(count)))
            if len(levels[name]) < count:
                raise ValueError(f"{self.name}: attribute {name!r} has codes up to {count - 1} but names for fewer")
        object.__setattr__(self, "levels", levels)

    def __len__(self) -> int:
        return self.features.shape[0]


def open_text(path: Path) -> io.TextIOBase:
    """A text file, or a gzip-compressed one (``.gz``), read as UTF-8."""
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def one_hot(
    values: Sequence[object], name: str, categories: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """One column per category (by default sorted by their text, as pandas.get_dummies orders them)."""
    text = [str(v) for v in values]
    categories = sorted(set(text)) if categories is None else list(categories)
    index = {c: i for i, c in enumerate(categories)}
    out = np.zeros((len(text), len(categories)))
    out[np.arange(len(text)), [index[t] for t in text]] = 1.0
    return out, [f"{name}={c}" for c in categories]


# -- groups ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GroupCoding:
    """The groups of a table under some attributes: ``ids`` (n,) in 0..K-1, and per group its ``name`` (for
    reports: ``sex=Female & race=White``) and ``key`` (for metric names: ``Female&White``)."""

    attributes: tuple[str, ...]
    ids: np.ndarray
    names: tuple[str, ...]
    keys: tuple[str, ...]
    levels: tuple[tuple[str, ...], ...]  # per group, its level of each attribute

    def __len__(self) -> int:
        return len(self.names)


def metric_key(levels: Sequence[str]) -> str:
    """A group's name inside a metric key: its levels joined by ``&``, no ``/`` (W&B's separator) or spaces."""
    return re.sub(r"[/\s]+", "_", "&".join(levels))


def encode_groups(table: TabularTable, attributes: Sequence[str]) -> GroupCoding:
    """Group ids of every row: the sorted distinct code tuples of ``attributes`` (present in the table)."""
    codes = np.stack([table.attributes[a] for a in attributes], axis=1)
    unique, ids = np.unique(codes, axis=0, return_inverse=True)
    levels = tuple(tuple(table.levels[a][c] for a, c in zip(attributes, row)) for row in unique.tolist())
    names = tuple(" & ".join(f"{a}={v}" for a, v in zip(attributes, lv)) for lv in levels)
    keys = [metric_key(lv) for lv in levels]
    for i, key in enumerate(keys):  # two groups whose levels differ only in "/" or spaces: keep them apart
        if keys.count(key) > 1:
            keys[i] = f"{key}#{i}"
    return GroupCoding(tuple(attributes), ids.reshape(-1).astype(np.int64), names, tuple(keys), levels)
