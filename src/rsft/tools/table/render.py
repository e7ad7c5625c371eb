"""Rendering a collected table: Markdown, CSV, the figures file docs embed, the terminal table, W&B."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any

from rsft.tools.table.aggregate import Cell, paired_differences
from rsft.tools.table.spec import TableSpec


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
