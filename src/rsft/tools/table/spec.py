"""The table spec: ``experiments/<name>.yaml`` parsed and checked (rows, seeds, metrics, published
references, tolerance, paired differences). The schema is documented in ``experiments/README.md``."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rsft.run.config import REPO_ROOT

TOLERANCE_RULES = ("spread", "absolute", "relative")


class TableSpecError(ValueError):
    """``experiments/<name>.yaml`` does not follow the schema."""


# -- the spec ---------------------------------------------------------------------------------------
@dataclass
class Metric:
    key: str
    label: str
    digits: int = 4


@dataclass
class Tolerance:
    """A cell is *inside* when |mean − reference| ≤ max(k·std, absolute, relative·|reference|)."""

    rule: str = "spread"
    k: float = 2.0
    absolute: float = 0.0
    relative: float = 0.0

    def describe(self) -> str:
        if self.rule == "spread":
            floors = "".join(
                f", {name}" for name, v in (("absolute", self.absolute), ("relative·|ref|", self.relative)) if v
            )
            return f"inside when |mean − ref| ≤ max({self.k:g}·std{floors})"
        if self.rule == "absolute":
            return f"inside when |mean − ref| ≤ {self.absolute:g}"
        return f"inside when |mean − ref| ≤ {self.relative:g}·|ref|"

    def bound(self, std: float, reference: float) -> float:
        if self.rule == "spread":
            return max(self.k * (std if math.isfinite(std) else 0.0), self.absolute, self.relative * abs(reference))
        if self.rule == "absolute":
            return self.absolute
        return self.relative * abs(reference)


@dataclass
class Row:
    label: str
    overrides: list[str]
    reference: dict[str, float] = field(default_factory=dict)
    after: str | None = None  # label of an earlier row whose run of the same seed this one needs
    optional: bool = False  # may be missing in a published table (e.g. its data set is not shipped)
    seeds: list[int] | None = None  # this row's own seeds (e.g. more for a small data set); None: the spec's

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.label).strip("_") or "row"


@dataclass
class PairedGroup:
    """``paired``: each of ``rows`` minus ``baseline`` on the seeds both have, for ``metrics``."""

    baseline: str
    metrics: list[str]
    rows: list[str]


@dataclass
class TableSpec:
    name: str
    title: str
    source: str
    seeds: list[int]
    metrics: list[Metric]
    rows: list[Row]
    overrides: list[str] = field(default_factory=list)
    tolerance: Tolerance = field(default_factory=Tolerance)
    env: dict[str, str] = field(default_factory=dict)
    notes: str = ""
    jobs: int = 1
    path: Path | None = None  # the spec file, when loaded from one
    paired: list[PairedGroup] = field(default_factory=list)  # rows minus a baseline row, seed by seed

    @property
    def optional_rows(self) -> set[str]:
        return {row.label for row in self.rows if row.optional}

    def seeds_of(self, row: Row) -> list[int]:
        return self.seeds if row.seeds is None else row.seeds


def _require(cond: bool, where: str, message: str) -> None:
    if not cond:
        raise TableSpecError(f"{where}: {message}")


def _parse_seeds(seeds: Any, where: str, key: str) -> list[int]:
    """A count N (seeds 0..N-1) or a list of non-negative integers."""
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        _require(seeds > 0, where, f"{key} must be positive, got {seeds}")
        seeds = list(range(seeds))
    _require(
        isinstance(seeds, list) and seeds and all(isinstance(s, int) and s >= 0 for s in seeds),
        where,
        f"{key} must be a count or a list of non-negative integers, got {seeds!r}",
    )
    return seeds


def _parse_paired(raw: Any, rows: list[Row], metrics: list[Metric], where: str) -> list[PairedGroup]:
    """``paired``: one group ``{baseline, metrics, rows?}`` or a list of them (rows: default every other row)."""
    if raw is None:
        return []
    groups = []
    labels = [r.label for r in rows]
    for group in raw if isinstance(raw, list) else [raw]:
        _require(
            isinstance(group, dict) and {"baseline", "metrics"} <= set(group) <= {"baseline", "metrics", "rows"},
            where,
            f"paired must be {{baseline: <row label>, metrics: [keys], rows: [labels] (optional)}}, got {group!r}",
        )
        _require(group["baseline"] in labels, where, f"paired.baseline={group['baseline']!r} must be a row label")
        stray = set(group["metrics"]) - {m.key for m in metrics}
        _require(not stray, where, f"paired.metrics names {sorted(stray)}, which are not in metrics")
        members = group.get("rows") or [label for label in labels if label != group["baseline"]]
        unknown = set(members) - set(labels)
        _require(not unknown, where, f"paired.rows names {sorted(unknown)}, which are not row labels")
        groups.append(PairedGroup(str(group["baseline"]), list(group["metrics"]), list(members)))
    return groups


def parse_spec(data: dict[str, Any], name: str, where: str = "table spec") -> TableSpec:
    """Check and convert a loaded ``experiments/<name>.yaml``."""
    _require(isinstance(data, dict), where, "must be a mapping with keys title, source, seeds, metrics, rows")
    unknown = set(data) - {
        "title",
        "source",
        "seeds",
        "metrics",
        "rows",
        "overrides",
        "tolerance",
        "env",
        "notes",
        "jobs",
        "paired",
    }
    _require(not unknown, where, f"unknown key(s) {sorted(unknown)}")
    seeds = _parse_seeds(data.get("seeds", 5), where, "seeds")
    metrics_raw = data.get("metrics")
    _require(isinstance(metrics_raw, list) and metrics_raw, where, "metrics must be a non-empty list")
    metrics = []
    for m in metrics_raw:
        if isinstance(m, str):
            m = {"key": m}
        _require(
            isinstance(m, dict) and "key" in m, where, f"each metric needs a key (a name in metrics.json), got {m!r}"
        )
        metrics.append(Metric(key=str(m["key"]), label=str(m.get("label", m["key"])), digits=int(m.get("digits", 4))))
    keys = {m.key for m in metrics}
    rows_raw = data.get("rows")
    _require(isinstance(rows_raw, list) and rows_raw, where, "rows must be a non-empty list")
    rows = []
    for i, r in enumerate(rows_raw):
        _require(isinstance(r, dict) and "label" in r, where, f"row {i} needs a label, got {r!r}")
        overrides = r.get("overrides", []) or []
        _require(
            isinstance(overrides, list) and all(isinstance(o, str) for o in overrides),
            where,
            f"row {r['label']!r}: overrides must be a list of Hydra override strings",
        )
        reference = r.get("reference", {}) or {}
        _require(isinstance(reference, dict), where, f"row {r['label']!r}: reference must map metric keys to numbers")
        stray = set(reference) - keys
        _require(
            not stray, where, f"row {r['label']!r}: reference names metric(s) {sorted(stray)} that are not in metrics"
        )
        stray_keys = set(r) - {"label", "overrides", "reference", "after", "optional", "seeds"}
        _require(not stray_keys, where, f"row {r['label']!r}: unknown key(s) {sorted(stray_keys)}")
        after = r.get("after")
        if after is not None:
            _require(
                str(after) in {row.label for row in rows},
                where,
                f"row {r['label']!r}: after={after!r} must name an earlier row's label",
            )
        rows.append(
            Row(
                str(r["label"]),
                list(overrides),
                {k: float(v) for k, v in reference.items()},
                None if after is None else str(after),
                bool(r.get("optional", False)),
                None if r.get("seeds") is None else _parse_seeds(r["seeds"], where, f"row {r['label']!r}: seeds"),
            )
        )
    slugs = [r.slug for r in rows]
    _require(len(set(slugs)) == len(slugs), where, f"row labels must differ (as directory names), got {slugs}")
    tol_raw = data.get("tolerance", {}) or {}
    _require(isinstance(tol_raw, dict), where, "tolerance must be a mapping (rule, k, absolute, relative)")
    tolerance = Tolerance(**tol_raw)
    _require(
        tolerance.rule in TOLERANCE_RULES,
        where,
        f"tolerance.rule must be one of {TOLERANCE_RULES}, got {tolerance.rule!r}",
    )
    overrides = data.get("overrides", []) or []
    _require(isinstance(overrides, list), where, "overrides must be a list of Hydra override strings")
    env = data.get("env", {}) or {}
    _require(isinstance(env, dict), where, "env must map environment variable names to values")
    jobs = data.get("jobs", 1)
    _require(
        isinstance(jobs, int) and not isinstance(jobs, bool) and jobs > 0,
        where,
        f"jobs must be a positive integer, got {jobs!r}",
    )
    paired = _parse_paired(data.get("paired"), rows, metrics, where)
    return TableSpec(
        paired=paired,
        jobs=jobs,
        name=name,
        title=str(data.get("title", name)),
        source=str(data.get("source", "")),
        seeds=seeds,
        metrics=metrics,
        rows=rows,
        overrides=[str(o) for o in overrides],
        tolerance=tolerance,
        env={str(k): str(v) for k, v in env.items()},
        notes=str(data.get("notes", "")),
    )


def load_spec(name_or_path: str, experiments_dir: Path | None = None) -> TableSpec:
    path = Path(name_or_path)
    if not path.suffix:
        path = (experiments_dir or REPO_ROOT / "experiments") / f"{name_or_path}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no table spec {path}; write experiments/<name>.yaml (see experiments/README.md)")
    spec = parse_spec(yaml.safe_load(path.read_text()), path.stem, str(path))
    spec.path = path
    return spec


# -- running --------------------------------------------------------------------------------------
