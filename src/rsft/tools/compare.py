"""``rsft-compare <sweep dir | run dirs...>``: compare runs from their run dirs alone (no W&B needed).

Reads each run's ``config.yaml``, ``run.json``, ``epochs.jsonl`` and ``metrics.json`` and writes, under
``--out``:

    compare.md / compare.csv       final metrics per run, keyed by the overrides that differ
    acceptance_rate.png            sampling/acceptance_rate vs epoch, one line per run
    <metric>.png                   the chosen --metric vs epoch, one line per run

and prints the table (rich). When ``seed`` is among the differing overrides, a second table gives
mean ± std over seeds for each setting of the other overrides. A run without ``metrics.json`` shows as
unfinished with empty cells, never as numbers.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from rsft.run.records import RUN_RECORD, flat_config

#: Config keys that differ between runs without saying anything about the experiment.
NOT_SETTINGS = ("paths.", "hydra.", "resume", "skip_finished")
ACCEPTANCE = "sampling/acceptance_rate"


@dataclass
class Run:
    path: Path
    config: dict[str, Any]
    record: dict[str, Any] | None
    epochs: list[dict[str, float]]
    metrics: dict[str, float] | None
    settings: dict[str, str] = field(default_factory=dict)  # the differing overrides, filled by key_runs

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.settings.items()) or self.path.name


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file() and path.name != ".hydra"


def find_runs(paths: list[Path]) -> list[Path]:
    """Run dirs given directly, or found below the given sweep dirs (ordered by job number, then path)."""
    found: list[Path] = []
    for path in paths:
        if not path.is_dir():
            raise FileNotFoundError(f"rsft-compare: {path} is not a directory (give a sweep dir or run dirs)")
        if is_run_dir(path):
            found.append(path)
            continue
        below = sorted(p.parent for p in path.rglob("config.yaml") if is_run_dir(p.parent))
        if not below:
            raise FileNotFoundError(f"rsft-compare: no run dirs (with config.yaml) under {path}")
        found.extend(below)

    def order(p: Path) -> tuple:
        record = _read_json(p / RUN_RECORD)
        job = record.get("job_num") if record else None
        return (str(record.get("sweep_dir")) if record else "", job if job is not None else math.inf, str(p))

    unique = list(dict.fromkeys(p.resolve() for p in found))
    return sorted(unique, key=order)


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def load_run(path: Path) -> Run:
    epochs_path = path / "epochs.jsonl"
    epochs = (
        [json.loads(line) for line in epochs_path.read_text().splitlines() if line.strip()]
        if epochs_path.is_file()
        else []
    )
    return Run(
        path=path,
        config=flat_config(OmegaConf.to_container(OmegaConf.load(path / "config.yaml"))),
        record=_read_json(path / RUN_RECORD),
        epochs=epochs,
        metrics=_read_json(path / "metrics.json"),
    )


def _parse_override(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    return key.lstrip("+~"), value


def key_runs(runs: list[Run]) -> list[str]:
    """Fill each run's ``settings`` with the overrides that differ between runs; return their names.

    Overrides come from ``run.json``; where they do not tell runs apart (runs started from Python, or
    edited configs), the differing keys of the resolved configs are used instead.
    """
    overrides = [dict(_parse_override(o) for o in (r.record or {}).get("overrides", [])) for r in runs]
    keys = list(dict.fromkeys(k for o in overrides for k in o))
    differing = [k for k in keys if len({o.get(k, _config_value(r, k)) for o, r in zip(overrides, runs)}) > 1]
    if differing:
        for run, o in zip(runs, overrides):
            run.settings = {k: o.get(k, _config_value(run, k)) for k in differing}
        return differing
    keys = list(dict.fromkeys(k for r in runs for k in r.config if not k.startswith(NOT_SETTINGS)))
    differing = [k for k in keys if len({_config_value(r, k) for r in runs}) > 1]
    for run in runs:
        run.settings = {k: _config_value(run, k) for k in differing}
    return differing


def _config_value(run: Run, key: str) -> str:
    value = run.config.get(key, "—")
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def metric_columns(runs: list[Run], metric: str, extra: list[str]) -> list[str]:
    """The chosen metric, the validation/test metrics, acceptance rate, epochs and wall time (when present)."""
    present = list(dict.fromkeys(k for r in runs for k in (r.metrics or {})))
    chosen = [metric, *extra]
    chosen += [k for k in present if k.startswith(("val/", "test/"))]
    chosen += [ACCEPTANCE, "epochs", "wall_seconds"]
    return [k for k in dict.fromkeys(chosen) if k in present]


def sort_runs(runs: list[Run], key: str | None, descending: bool) -> list[Run]:
    if not key:
        return runs

    def value(run: Run) -> tuple[int, float]:
        v = (run.metrics or {}).get(key)
        if v is None or not isinstance(v, (int, float)) or math.isnan(v):
            return (1, 0.0)  # missing values last, whatever the direction
        return (0, -v if descending else v)

    return sorted(runs, key=value)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def run_table(runs: list[Run], settings: list[str], metrics: list[str]) -> tuple[list[str], list[list[str]]]:
    """One row per run: its job number in the sweep (or position), the differing overrides, status, metrics."""
    header = ["job", *settings, "status", *metrics]
    rows = []
    for position, run in enumerate(runs):
        job = (run.record or {}).get("job_num")
        status = "finished" if run.metrics is not None else "unfinished"
        values = [_cell((run.metrics or {}).get(m)) for m in metrics]
        rows.append([str(job if job is not None else position), *(run.settings[k] for k in settings), status, *values])
    return header, rows


def seed_table(runs: list[Run], settings: list[str], metrics: list[str]) -> tuple[list[str], list[list[str]]] | None:
    """Mean ± std over seeds per setting of the other differing overrides (None when seed does not vary)."""
    if "seed" not in settings:
        return None
    others = [k for k in settings if k != "seed"]
    groups: dict[tuple[str, ...], list[Run]] = {}
    for run in runs:
        groups.setdefault(tuple(run.settings[k] for k in others), []).append(run)
    header = [*others, "seeds", *metrics]
    rows = []
    for key, members in groups.items():
        finished = [r for r in members if r.metrics is not None]
        cells = []
        for m in metrics:
            values = [r.metrics[m] for r in finished if isinstance(r.metrics.get(m), (int, float))]
            if not values:
                cells.append("")
            elif len(values) == 1:
                cells.append(f"{values[0]:.4g}")
            else:
                cells.append(f"{statistics.fmean(values):.4g} ± {statistics.stdev(values):.2g}")
        rows.append([*key, f"{len(finished)}/{len(members)}", *cells])
    return header, rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plot_curves(runs: list[Run], key: str, path: Path) -> Path | None:
    """``key`` vs epoch from each run's epochs.jsonl, one line per run; None when no run logged it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [(run, [(row["epoch"], row[key]) for row in run.epochs if key in row]) for run in runs]
    curves = [(run, points) for run, points in curves if points]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run, points in curves:
        epochs, values = zip(*points)
        ax.plot(epochs, values, marker="o", markersize=3, label=run.label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _file_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key)


def compare(
    paths: list[Path],
    metric: str = "val/nll",
    sort: str | None = None,
    descending: bool = False,
    out: Path | None = None,
    columns: list[str] | None = None,
    console: Any = None,
) -> dict[str, Any]:
    """Do all of the above; return the tables and the files written (for tests and scripts)."""
    from rich.console import Console
    from rich.table import Table

    runs = [load_run(p) for p in find_runs([Path(p) for p in paths])]
    settings = key_runs(runs)
    metrics = metric_columns(runs, metric, list(columns or []))
    if metric not in metrics and not any(metric in row for r in runs for row in r.epochs):
        known = sorted({k for r in runs for k in (r.metrics or {})})
        raise KeyError(f"--metric {metric!r} is in no run's metrics.json or epochs.jsonl; known: {', '.join(known)}")
    runs = sort_runs(runs, sort if sort is not None else metric, descending)
    if out is None:
        given = [Path(p) for p in paths]
        out = given[0] / "compare" if len(given) == 1 and not is_run_dir(given[0]) else Path("compare")
    out.mkdir(parents=True, exist_ok=True)

    header, rows = run_table(runs, settings, metrics)
    written = {"markdown": out / "compare.md", "csv": out / "compare.csv"}
    text = markdown(header, rows)
    by_seed = seed_table(runs, settings, metrics)
    if by_seed is not None:
        text += "\nMean ± std over seeds:\n\n" + markdown(*by_seed)
    written["markdown"].write_text(text)
    with written["csv"].open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*header, "run_dir"])
        writer.writerows([*row, str(run.path)] for row, run in zip(rows, runs))
    for key in dict.fromkeys([ACCEPTANCE, metric]):
        plot = plot_curves(runs, key, out / f"{_file_name(key)}.png")
        if plot is not None:
            written[key] = plot

    console = console or Console()
    for title, (head, body) in (
        [("runs", (header, rows)), ("mean ± std over seeds", by_seed)] if by_seed else [("runs", (header, rows))]
    ):
        table = Table(title=f"rsft-compare: {title}")
        for h in head:
            table.add_column(h, overflow="fold")
        for row in body:
            table.add_row(*row)
        console.print(table)
    console.print(f"wrote {', '.join(str(p) for p in written.values())}")
    return {
        "settings": settings,
        "metrics": metrics,
        "header": header,
        "rows": rows,
        "by_seed": by_seed,
        "files": written,
    }


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``rsft-compare``)."""
    parser = argparse.ArgumentParser(prog="rsft-compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="a sweep dir (multirun dir) or run dirs")
    parser.add_argument(
        "--metric", default="val/nll", help="metric for the table, the sort and the per-epoch plot (default: val/nll)"
    )
    parser.add_argument("--sort", default=None, help="final metric to sort by (default: --metric); '' keeps run order")
    parser.add_argument("--desc", action="store_true", help="sort descending (higher is better)")
    parser.add_argument(
        "--out", type=Path, default=None, help="output dir (default: <sweep dir>/compare, else ./compare)"
    )
    parser.add_argument("--columns", nargs="*", default=[], help="more final metrics to show")
    args = parser.parse_args(argv)
    try:
        compare(
            args.paths, metric=args.metric, sort=args.sort, descending=args.desc, out=args.out, columns=args.columns
        )
    except (FileNotFoundError, KeyError) as err:
        print(f"rsft-compare: error: {err.args[0] if err.args else err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
