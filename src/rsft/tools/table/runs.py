"""Running a table's cells: one ``rsft-train -m`` per row (or one process per (row, seed) cell with ``--jobs``),
into deterministic run directories; a cell whose ``metrics.json`` exists is never run again."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rsft.tools.table.spec import Row, TableSpec


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
