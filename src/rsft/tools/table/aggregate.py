"""From run directories to cells: a figure per run, mean ± std per (row, metric), the verdict against the
published reference, and differences paired by seed."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from rsft.tools.table.runs import run_dir
from rsft.tools.table.spec import PairedGroup, TableSpec, Tolerance


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
