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
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from rsft.run.config import REPO_ROOT
from rsft.tools.provenance import git_state, provenance, write_artifact
from rsft.tools.sources import import_closure, relative, run_sources
from rsft.tools.table.aggregate import Cell, collect, judge, paired_differences, run_figure
from rsft.tools.table.render import log_to_wandb, print_table, table_csv, table_figures, table_markdown, write_outputs
from rsft.tools.table.runs import failure_reason, missing_seeds, multirun_command, run_dir, run_missing
from rsft.tools.table.spec import (
    Metric,
    PairedGroup,
    Row,
    TableSpec,
    TableSpecError,
    Tolerance,
    load_spec,
    parse_spec,
)

__all__ = [
    "Cell",
    "Metric",
    "PairedGroup",
    "Row",
    "TableSpec",
    "TableSpecError",
    "Tolerance",
    "collect",
    "entry",
    "failure_reason",
    "judge",
    "load_spec",
    "log_to_wandb",
    "main",
    "missing_seeds",
    "multirun_command",
    "paired_differences",
    "parse_spec",
    "print_table",
    "publish",
    "run_dir",
    "run_figure",
    "run_missing",
    "table_csv",
    "table_figures",
    "table_markdown",
    "write_outputs",
]


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
