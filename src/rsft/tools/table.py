"""``rsft-table <name>``: reproduce a published table from ``experiments/<name>.yaml``.

Every row (a label + Hydra overrides) is run for every seed through ``rsft-train -m`` (Hydra
multirun, so any launcher works: pass e.g. ``hydra/launcher=joblib`` after the name). Runs land in
``outputs/tables/<name>/runs/<row>/seed=<k>``; a cell whose ``metrics.json`` exists is never run
again, so re-running after a crash runs only what is missing. The table (mean ± std over seeds,
the published reference beside each cell, a verdict per cell) is printed with rich and written to
``outputs/tables/<name>/table.md`` and ``table.csv``. The schema is documented in
``experiments/README.md``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rsft.run.config import REPO_ROOT
from rsft.tools.provenance import git_state, provenance, write_artifact
from rsft.tools.sources import import_closure, relative, run_sources

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
def run_dir(out: Path, row: Row, seed: int) -> Path:
    return out / "runs" / row.slug / f"seed={seed}"


def missing_seeds(spec: TableSpec, out: Path, row: Row) -> list[int]:
    return [s for s in spec.seeds_of(row) if not (run_dir(out, row, s) / "metrics.json").is_file()]


def multirun_command(spec: TableSpec, out: Path, row: Row, seeds: list[int], extra: list[str]) -> list[str]:
    """``rsft-train -m`` for one row and the given seeds, with deterministic run directories."""
    return [
        sys.executable,
        "-m",
        "rsft.train",
        "-m",
        *spec.overrides,
        *row.overrides,
        f"seed={','.join(str(s) for s in seeds)}",
        f"hydra.sweep.dir={out / 'runs' / row.slug}",
        "hydra.sweep.subdir='seed=${seed}'",
        *extra,
    ]


def failure_reason(stderr: str, returncode: int) -> str:
    """The line of a failed run's stderr that says why: rsft-train's own one-line error if present."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and "HYDRA_FULL_ERROR" not in ln]
    for prefer in ("rsft-train: error:", "error"):
        for line in lines:
            if prefer in line.lower():
                return line
    return lines[-1] if lines else f"exit code {returncode}"


def _run_env(spec: TableSpec) -> dict[str, str]:
    # The spec's env (e.g. OMP_NUM_THREADS=1 for many tiny jobs) unless the caller's environment sets it.
    return {**spec.env, **os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}


def _record_failure(out: Path, row: Row, stderr: str, seed: int | None = None) -> None:
    (out / "runs" / row.slug).mkdir(parents=True, exist_ok=True)
    name = "last_error.txt" if seed is None else f"last_error_seed={seed}.txt"
    (out / "runs" / row.slug / name).write_text(stderr)


def run_missing(spec: TableSpec, out: Path, extra: list[str], log: Any, jobs: int = 1) -> dict[str, str]:
    """Run every missing (row, seed); return row label → error line for rows whose runs failed.

    ``jobs`` = 1 runs one ``rsft-train -m`` per row (seeds one after another, imports paid once per
    row); more runs that many (row, seed) cells at once, one process each.
    """
    if jobs > 1:
        return _run_cells_in_parallel(spec, out, extra, log, jobs)
    errors: dict[str, str] = {}
    env = _run_env(spec)
    by_label = {row.label: row for row in spec.rows}
    for row in spec.rows:
        seeds = missing_seeds(spec, out, row)
        if row.after is not None:
            blocked = [s for s in seeds if not (run_dir(out, by_label[row.after], s) / "metrics.json").is_file()]
            if blocked:
                errors[row.label] = f"needs row {row.after!r} seed(s) {blocked}, which did not finish"
                log(f"[bold]{row.label}[/]: [red]skipping[/] seed(s) {blocked}: row {row.after!r} did not finish them")
            seeds = [s for s in seeds if s not in blocked]
        if not seeds:
            continue
        log(f"[bold]{row.label}[/]: running seed(s) {seeds}")
        started = time.perf_counter()
        proc = subprocess.run(multirun_command(spec, out, row, seeds, extra), capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            reason = failure_reason(proc.stderr, proc.returncode)
            errors[row.label] = reason.strip()
            _record_failure(out, row, proc.stderr)
            log(f"  [red]failed[/] ({time.perf_counter() - started:.0f} s): {reason.strip()}")
        else:
            log(f"  done in {time.perf_counter() - started:.0f} s")
    return errors


def _run_cells_in_parallel(spec: TableSpec, out: Path, extra: list[str], log: Any, jobs: int) -> dict[str, str]:
    """Up to ``jobs`` (row, seed) runs at once; a row with ``after`` waits for that row's same seed.

    Cells are submitted in row order and the pool starts them first-in first-out, so a cell waiting
    for an earlier one never holds up a cell it depends on (no deadlock).
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    env = _run_env(spec)
    errors: dict[str, str] = {}
    done: dict[tuple[str, int], Future] = {}
    by_label = {row.label: row for row in spec.rows}

    def run_cell(row: Row, seed: int) -> bool:
        if row.after is not None:
            needed = done.get((row.after, seed))
            finished = needed.result() if needed is not None else True
            if not finished or not (run_dir(out, by_label[row.after], seed) / "metrics.json").is_file():
                errors.setdefault(row.label, f"needs row {row.after!r} seed {seed}, which did not finish")
                log(f"[bold]{row.label}[/] seed {seed}: [red]skipped[/]: row {row.after!r} seed {seed} did not finish")
                return False
        started = time.perf_counter()
        proc = subprocess.run(multirun_command(spec, out, row, [seed], extra), capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            reason = failure_reason(proc.stderr, proc.returncode).strip()
            errors.setdefault(row.label, reason)
            _record_failure(out, row, proc.stderr, seed)
            log(f"[bold]{row.label}[/] seed {seed}: [red]failed[/] ({seconds:.0f} s): {reason}")
            return False
        log(f"[bold]{row.label}[/] seed {seed}: done in {seconds:.0f} s")
        return True

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for row in spec.rows:
            for seed in missing_seeds(spec, out, row):
                done[(row.label, seed)] = pool.submit(run_cell, row, seed)
        for future in done.values():
            future.result()
    return errors


# -- aggregating ------------------------------------------------------------------------------------
@dataclass
class Cell:
    row: str
    metric: str
    values: list[float]
    reference: float | None
    bound: float | None = None
    verdict: str = "missing"
    by_seed: dict[int, float] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values) / self.n if self.values else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation over seeds (n − 1); NaN with fewer than two."""
        if self.n < 2:
            return math.nan
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / (self.n - 1))


def judge(cell: Cell, tolerance: Tolerance) -> Cell:
    if not cell.values:
        cell.verdict = "missing"
    elif cell.reference is None:
        cell.verdict = "no reference"
    else:
        cell.bound = tolerance.bound(cell.std, cell.reference)
        cell.verdict = "inside" if abs(cell.mean - cell.reference) <= cell.bound else "outside"
    return cell


EPOCH_KEY = re.compile(r"^epoch\[(-?\d+)\]:(.+)$")


def run_figure(directory: Path, key: str) -> float | None:
    """A finite figure of one run: a key of its metrics.json, or ``epoch[k]:<key>`` from row k of its
    epochs.jsonl (k < 0 counts from the last epoch). None when the run or the figure is missing."""
    match = EPOCH_KEY.match(key)
    if match:
        path = directory / "epochs.jsonl"
        if not path.is_file():
            return None
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        try:
            record = rows[int(match.group(1))]
        except IndexError:
            return None
        key = match.group(2)
    else:
        path = directory / "metrics.json"
        if not path.is_file():
            return None
        record = json.loads(path.read_text())
    value = record.get(key)
    return float(value) if value is not None and math.isfinite(float(value)) else None


def collect(spec: TableSpec, out: Path) -> list[list[Cell]]:
    """One Cell per (row, metric) from the runs' metrics.json / epochs.jsonl (finite values only)."""
    table = []
    for row in spec.rows:
        cells = []
        for metric in spec.metrics:
            found = {seed: run_figure(run_dir(out, row, seed), metric.key) for seed in spec.seeds_of(row)}
            by_seed = {seed: value for seed, value in found.items() if value is not None}
            cell = Cell(row.label, metric.key, list(by_seed.values()), row.reference.get(metric.key), by_seed=by_seed)
            cells.append(judge(cell, spec.tolerance))
        table.append(cells)
    return table


def paired_differences(spec: TableSpec, table: list[list[Cell]]) -> list[tuple[PairedGroup, str, str, list[float]]]:
    """``paired``: per group, row and metric, the row minus the group's baseline on the seeds both have."""
    cells = {(row.label, cell.metric): cell for row, row_cells in zip(spec.rows, table) for cell in row_cells}
    out = []
    for group in spec.paired:
        for label in group.rows:
            for metric in group.metrics:
                base = cells[(group.baseline, metric)].by_seed
                diffs = [v - base[s] for s, v in cells[(label, metric)].by_seed.items() if s in base]
                out.append((group, label, metric, diffs))
    return out


def format_cell(cell: Cell, digits: int, signed: bool = False) -> str:
    """``mean ± std`` (``+`` before a positive mean when ``signed``: a difference); ``missing`` when empty."""
    if not cell.values:
        return "missing"
    std = f" ± {cell.std:.{digits}f}" if cell.n > 1 else ""
    return f"{cell.mean:{'+' if signed else ''}.{digits}f}{std}"


def format_reference(cell: Cell, digits: int) -> str:
    return "—" if cell.reference is None else f"{cell.reference:.{digits}f}"


def _describe_seeds(spec: TableSpec) -> str:
    if all(row.seeds is None for row in spec.rows):
        return str(spec.seeds)
    rows = ", ".join(f"{row.label}: {len(row.seeds)}" for row in spec.rows if row.seeds is not None)
    return f"{spec.seeds}, except rows with seeds of their own ({rows})"


def table_markdown(spec: TableSpec, table: list[list[Cell]], footer: str = "") -> str:
    """The table as Markdown: title, reference, the rows, and the count of cells inside the tolerance."""
    md = [f"# {spec.title}", ""]
    if spec.source:
        md += [f"Reference: {spec.source}", ""]
    md += [
        f"Seeds: {_describe_seeds(spec)}. Cells: mean ± std over seeds (n = runs found); reference in brackets; "
        f"verdict: {spec.tolerance.describe()}.",
        "",
    ]
    header = ["row"] + [m.label for m in spec.metrics]
    md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row, cells in zip(spec.rows, table):
        parts = [row.label]
        for metric, cell in zip(spec.metrics, cells):
            text = format_cell(cell, metric.digits)
            if cell.values:
                text += f" (n={cell.n})"
            if cell.reference is not None:
                text += f" [{format_reference(cell, metric.digits)}]"
            if cell.verdict in ("inside", "outside"):
                text += " ✓" if cell.verdict == "inside" else " ✗"
            parts.append(text)
        md.append("| " + " | ".join(parts) + " |")
    inside = sum(c.verdict == "inside" for cells in table for c in cells)
    judged = sum(c.verdict in ("inside", "outside") for cells in table for c in cells)
    missing = sum(c.verdict == "missing" for cells in table for c in cells)
    if judged:
        md += ["", f"{inside} of {judged} judged cells inside the tolerance (✓ inside, ✗ outside); {missing} missing."]
    else:
        md += ["", f"No cell has a reference value, so none is judged; {missing} missing."]
    md += paired_markdown(spec, table)
    if footer:
        md += ["", footer]
    return "\n".join(md) + "\n"


def paired_markdown(spec: TableSpec, table: list[list[Cell]]) -> list[str]:
    """The ``paired`` sections: rows minus a baseline row, seed by seed (mean ± sd, n seeds)."""
    digits = {m.key: m.digits for m in spec.metrics}
    labels = {m.key: m.label for m in spec.metrics}
    by_group: dict[int, dict[str, dict[str, list[float]]]] = {}
    for group, label, metric, diffs in paired_differences(spec, table):
        by_group.setdefault(id(group), {}).setdefault(label, {})[metric] = diffs
    md = []
    for group in spec.paired:
        md += [
            "",
            f"Paired by seed: row minus {group.baseline!r} on the same seeds (mean ± sd; n; lowest … highest).",
            "",
        ]
        md += ["| row | " + " | ".join(labels[k] for k in group.metrics) + " |"]
        md += ["|" + "---|" * (1 + len(group.metrics))]
        for label, diffs in by_group.get(id(group), {}).items():
            parts = [_difference(Cell(label, k, diffs[k], None), digits[k]) for k in group.metrics]
            md.append(f"| {label} | " + " | ".join(parts) + " |")
    return md


def _difference(cell: Cell, digits: int) -> str:
    if not cell.values:
        return format_cell(cell, digits, signed=True)
    spread = f"; {min(cell.values):+.{digits}f} … {max(cell.values):+.{digits}f}" if cell.n > 1 else ""
    return format_cell(cell, digits, signed=True) + f" (n={cell.n}{spread})"


def table_csv(table: list[list[Cell]]) -> str:
    """One line per row × metric: n, mean, std, reference, bound, verdict."""
    handle = io.StringIO()
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(["row", "metric", "n", "mean", "std", "reference", "bound", "verdict"])
    for cells in table:
        for c in cells:
            writer.writerow(
                [
                    c.row,
                    c.metric,
                    c.n,
                    "" if not c.values else c.mean,
                    "" if c.n < 2 else c.std,
                    "" if c.reference is None else c.reference,
                    "" if c.bound is None else c.bound,
                    c.verdict,
                ]
            )
    return handle.getvalue()


def table_figures(spec: TableSpec, table: list[list[Cell]]) -> dict[str, Any]:
    """Named figures for prose in the docs: verdict counts and, per ``<row> :: <metric>``, mean/std/n/verdict."""
    cells = [c for row in table for c in row]
    figures: dict[str, Any] = {
        "inside": sum(c.verdict == "inside" for c in cells),
        "judged": sum(c.verdict in ("inside", "outside") for c in cells),
        "missing": sum(c.verdict == "missing" for c in cells),
    }
    for c in cells:
        key = f"{c.row} :: {c.metric}"
        figures[f"{key} :: mean"] = c.mean if c.values else None
        figures[f"{key} :: std"] = c.std if c.n > 1 else None
        figures[f"{key} :: n"] = c.n
        figures[f"{key} :: min"] = min(c.values) if c.values else None  # the lowest and highest seed
        figures[f"{key} :: max"] = max(c.values) if c.values else None
        figures[f"{key} :: verdict"] = c.verdict
    for group, label, metric, diffs in paired_differences(spec, table):
        diff = Cell(label, metric, diffs, None)
        key = f"paired :: {label} − {group.baseline} :: {metric}"
        figures[f"{key} :: mean"] = diff.mean if diffs else None
        figures[f"{key} :: std"] = diff.std if diff.n > 1 else None
        figures[f"{key} :: sem"] = diff.std / math.sqrt(diff.n) if diff.n > 1 else None  # standard error
        figures[f"{key} :: n"] = diff.n
        figures[f"{key} :: min"] = min(diffs) if diffs else None  # the worst seed: > 0 means better in every seed
        figures[f"{key} :: max"] = max(diffs) if diffs else None
    return figures


def write_outputs(spec: TableSpec, table: list[list[Cell]], out: Path, footer: str = "") -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    md_path, csv_path = out / "table.md", out / "table.csv"
    md_path.write_text(table_markdown(spec, table, footer))
    csv_path.write_text(table_csv(table))
    return md_path, csv_path


def table_sources(spec: TableSpec, extra: list[str]) -> list[str]:
    """The files the table's runs load: every row's configs and code, the spec, and this tool."""
    files = set(import_closure([Path(__file__)])) | ({spec.path} if spec.path else set())
    for row in spec.rows:
        files |= run_sources([*spec.overrides, *row.overrides, *[o for o in extra if not o.startswith("hydra")]])
    return relative(files)


def _earlier_publish(directory: Path) -> dict[str, Any] | None:
    """What an earlier ``--publish`` of this table recorded (kept when a later one only re-collects)."""
    path = directory / "provenance.json"
    if not path.is_file():
        return None
    old = json.loads(path.read_text())
    earlier = old.get("earlier_publish") if old.get("collected_only") else None
    return earlier or {k: old.get(k) for k in ("command", "commit", "date", "wall_seconds", "runs_seconds")}


def publish(
    spec: TableSpec,
    table: list[list[Cell]],
    out: Path,
    argv: list[str],
    seconds: float,
    extra: list[str],
    results_root: Path = REPO_ROOT / "experiments" / "results",
    started: dict[str, Any] | None = None,
    present_before: int = 0,
) -> Path:
    """Write ``experiments/results/<name>/``: table.md, table.csv, figures.json, provenance.json.

    The provenance says how many cells this invocation ran and how many it found from earlier runs, and
    the seconds the runs themselves took (from their metrics.json), since a resumed table's wall time
    covers only what it ran.
    """
    run_seconds, reused = 0.0, present_before
    for row in spec.rows:
        for seed in spec.seeds_of(row):
            path = run_dir(out, row, seed) / "metrics.json"
            if path.is_file():
                run_seconds += float(json.loads(path.read_text()).get("wall_seconds", 0.0))
    directory = results_root / spec.name
    record = provenance(
        ["rsft-table", *argv],
        seconds,
        table_sources(spec, extra),
        seeds=list(spec.seeds),
        row_seeds={row.label: row.seeds for row in spec.rows if row.seeds is not None},
        runs_seconds=round(run_seconds, 1),
        cells_from_earlier_runs=reused,
        jobs=spec.jobs,
        started=started,
    )
    record["collected_only"] = reused == sum(len(spec.seeds_of(row)) for row in spec.rows)  # ran nothing
    earlier = _earlier_publish(directory) if record["collected_only"] else None
    if earlier:
        record["earlier_publish"] = earlier
    if record["collected_only"]:
        made_by = f" by `{earlier['command']}` ({earlier['wall_seconds']:.0f} s wall)" if earlier else ""
        footer = f"Collected from earlier runs{made_by}; the runs themselves: {run_seconds:.0f} s of `train()`."
    else:
        footer = f"Wall time {seconds:.0f} s ({spec.jobs} job(s) at a time); the runs themselves: {run_seconds:.0f} s"
        footer += f"; {reused} cell(s) from earlier runs." if reused else "."
    write_artifact(
        directory,
        {"table.md": table_markdown(spec, table, footer), "table.csv": table_csv(table)},
        table_figures(spec, table),
        record,
    )
    return directory


def print_table(spec: TableSpec, table: list[list[Cell]], console: Any) -> None:
    from rich.table import Table

    rich_table = Table(title=spec.title, caption=f"reference: {spec.source}" if spec.source else None)
    rich_table.add_column("row")
    for metric in spec.metrics:
        rich_table.add_column(metric.label, justify="right")
        rich_table.add_column("ref", justify="right", style="dim")
    colour = {"inside": "green", "outside": "red", "missing": "yellow", "no reference": "white"}
    for row, cells in zip(spec.rows, table):
        parts = [row.label]
        for metric, cell in zip(spec.metrics, cells):
            mark = {"inside": " ✓", "outside": " ✗"}.get(cell.verdict, "")
            parts.append(f"[{colour[cell.verdict]}]{format_cell(cell, metric.digits)}{mark}[/]")
            parts.append(format_reference(cell, metric.digits))
        rich_table.add_row(*parts)
    console.print(rich_table)


def log_to_wandb(spec: TableSpec, table: list[list[Cell]], out: Path) -> None:
    """The table as a W&B Table in a run of its own (offline unless WANDB_MODE says otherwise)."""
    import wandb

    run = wandb.init(
        project="rsft",
        name=f"table-{spec.name}",
        job_type="table",
        dir=str(out),
        mode=os.environ.get("WANDB_MODE", "offline"),
        config={"seeds": spec.seeds, "source": spec.source},
    )
    columns = ["row", "metric", "n", "mean", "std", "reference", "verdict"]
    data = [[c.row, c.metric, c.n, c.mean, c.std, c.reference, c.verdict] for cells in table for c in cells]
    run.log({f"table/{spec.name}": wandb.Table(columns=columns, data=data)})
    run.finish()


# -- the command ----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rsft-table", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="experiments/<name>.yaml (or a path to a .yaml file)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run (e.g. hydra/launcher=joblib)")
    parser.add_argument("--collect", action="store_true", help="only aggregate the runs that exist; run nothing")
    parser.add_argument("--seeds", type=int, help="use seeds 0..N-1 instead of the spec's seeds")
    parser.add_argument(
        "--output-root", type=Path, default=REPO_ROOT / "outputs" / "tables", help="default: <repo>/outputs/tables"
    )
    parser.add_argument(
        "--wandb", action="store_true", help="also log the table as a W&B Table (offline unless WANDB_MODE is set)"
    )
    parser.add_argument("--jobs", type=int, help="(row, seed) runs at once (default: the spec's jobs, else 1)")
    parser.add_argument(
        "--publish",
        action="store_true",
        help="also write experiments/results/<name>/ (table, figures, provenance) for the docs to embed",
    )
    parser.add_argument(
        "--results-root", type=Path, default=REPO_ROOT / "experiments" / "results", help=argparse.SUPPRESS
    )
    args = parser.parse_intermixed_args(argv)

    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 200)
    try:
        spec = load_spec(args.name)
    except (FileNotFoundError, TableSpecError, yaml.YAMLError) as err:
        print(f"rsft-table: error: {err}", file=sys.stderr)
        return 2
    if args.seeds is not None:
        if args.seeds <= 0:
            print(f"rsft-table: error: --seeds must be positive, got {args.seeds}", file=sys.stderr)
            return 2
        spec.seeds = list(range(args.seeds))
        for row in spec.rows:  # --seeds applies to every row, rows with seeds of their own included
            row.seeds = None
    if args.jobs is not None:
        if args.jobs <= 0:
            print(f"rsft-table: error: --jobs must be positive, got {args.jobs}", file=sys.stderr)
            return 2
        spec.jobs = args.jobs
    out = args.output_root / spec.name
    code_at_start = git_state() if args.publish else None
    present_before = sum(len(spec.seeds_of(row)) - len(missing_seeds(spec, out, row)) for row in spec.rows)
    started = time.perf_counter()
    errors: dict[str, str] = {}
    if not args.collect:
        errors = run_missing(spec, out, list(args.overrides), console.print, spec.jobs)
    seconds = time.perf_counter() - started
    table = collect(spec, out)
    footer = "" if args.collect else f"Wall time of this rsft-table invocation: {seconds:.0f} s."
    if errors:
        footer += "\n\nRows with failed runs:\n" + "\n".join(f"- {label}: {reason}" for label, reason in errors.items())
    md_path, csv_path = write_outputs(spec, table, out, footer.strip())
    print_table(spec, table, console)
    for label, reason in errors.items():
        console.print(f"[yellow]{label}[/]: missing — {reason}")
    console.print(f"wrote {md_path} and {csv_path}" + ("" if args.collect else f" ({seconds:.0f} s)"))
    if args.publish:
        # A run that is missing blocks publishing; a metric that a finished run does not have (e.g. no
        # "before" figure for a row that starts from a checkpoint) is shown as missing and does not.
        required_missing = sorted(
            row.label for row in spec.rows if row.label not in spec.optional_rows and missing_seeds(spec, out, row)
        )
        if required_missing:
            console.print(
                f"[red]not published[/]: rows {required_missing} have runs missing; run them (or mark a row "
                "`optional: true` in the spec when its data may be absent)"
            )
            return 1
        command = list(argv if argv is not None else sys.argv[1:])
        published = publish(
            spec, table, out, command, seconds, args.overrides, args.results_root, code_at_start, present_before
        )
        console.print(f"published {published}")
    if args.wandb:
        log_to_wandb(spec, table, out)
    return 0


def entry() -> None:
    """Console entry point (``rsft-table``)."""
    raise SystemExit(main())


if __name__ == "__main__":
    entry()
