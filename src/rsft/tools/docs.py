"""``rsft-docs``: the figures in the READMEs come from committed artifacts, and a check says when they differ.

An artifact is a directory with the files a producing command wrote, a ``figures.json`` of named figures
and a ``provenance.json`` (:mod:`rsft.tools.provenance`). The docs embed artifacts with two markers:

    <!-- include: experiments/results/aif360_reweighing/table.md -->
    ...filled in by `rsft-docs build`: the file (without its title line) and a "produced by" line...
    <!-- /include -->

    ... <!-- fig: experiments/results/aif360_reweighing | inside | d -->35<!-- /fig --> of ... cells ...

(a figure: artifact directory | key in its figures.json | Python format spec). Commands:

    rsft-docs build      fill every marker in README.md, experiments/README.md, benchmarks/README.md
    rsft-docs check      exit 1 when a marker's text differs from its artifact (the default tests run this)
    rsft-docs stale      list the artifacts whose producing code or configs changed after their commit
    rsft-docs examples   run experiments/examples.yaml and publish experiments/results/examples/<name>/
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rsft.run.config import REPO_ROOT
from rsft.tools.provenance import (
    ARTIFACT_DIRS,
    PROVENANCE,
    cpu_capability,
    git_state,
    provenance,
    read_figures,
    read_provenance,
    write_artifact,
)
from rsft.tools.sources import relative, run_sources

DOCS = ("README.md", "experiments/README.md", "benchmarks/README.md")
EXAMPLES = "experiments/examples.yaml"
EXAMPLES_DIR = "experiments/results/examples"

INCLUDE = re.compile(r"(<!-- include: (?P<path>[^ ]+?) -->\n)(?P<body>.*?)(<!-- /include -->)", re.S)
FIGURE = re.compile(r"(<!-- fig: (?P<spec>[^>]+?) -->)(?P<value>.*?)(<!-- /fig -->)", re.S)


class DocsError(ValueError):
    """A marker names an artifact, file or figure that does not exist, or an examples spec is malformed."""


# -- filling markers -----------------------------------------------------------------------------
def produced_by(directory: Path) -> str:
    """One line under an embedded artifact: command, commit, date, wall time."""
    record = read_provenance(directory)
    commit = (record.get("commit") or "unknown")[:10]
    state = ", uncommitted changes" if record.get("dirty") else ""
    if record.get("code_changed_during_run"):
        state = ", code changed while it ran"
    date = str(record.get("date", ""))[:10]
    seconds = record.get("wall_seconds")
    took = f", {seconds:.0f} s" if isinstance(seconds, (int, float)) else ""
    return f"<sub>Produced by `{record.get('command', '?')}` at `{commit}`{state}, {date}{took}.</sub>\n"


def include_body(path: str, root: Path = REPO_ROOT) -> str:
    file = root / path
    if not file.is_file():
        raise DocsError(f"include: {path} does not exist; produce it (see its provenance command) or fix the path")
    lines = file.read_text().splitlines()
    if lines and lines[0].startswith("# "):  # the artifact's own title: the doc has its heading
        lines = lines[1:]
        while lines and not lines[0].strip():
            lines.pop(0)
    if not (file.parent / PROVENANCE).is_file():
        raise DocsError(f"include: {path} has no {PROVENANCE} beside it: publish it with its producing command")
    return "\n".join(lines).rstrip() + "\n\n" + produced_by(file.parent)


def figure_text(spec: str, root: Path = REPO_ROOT) -> str:
    parts = [p.strip() for p in spec.split("|")]
    if len(parts) not in (2, 3):
        raise DocsError(f"fig: {spec!r} must be 'artifact dir | figure key' or 'artifact dir | key | format'")
    directory, key = root / parts[0], parts[1]
    fmt = parts[2] if len(parts) == 3 else ""
    figures = read_figures(directory)
    if key not in figures:
        raise DocsError(f"fig: {parts[0]} has no figure {key!r} in figures.json (it has {len(figures)} figures)")
    value = figures[key]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, fmt)


def fill(text: str, root: Path = REPO_ROOT) -> str:
    """``text`` with every include and figure marker filled from its artifact."""
    text = INCLUDE.sub(lambda m: m.group(1) + include_body(m.group("path"), root) + m.group(4), text)
    return FIGURE.sub(lambda m: m.group(1) + figure_text(m.group("spec"), root) + m.group(4), text)


def differences(text: str, root: Path = REPO_ROOT) -> list[str]:
    """The markers of ``text`` whose content differs from their artifacts, each with the two versions."""
    found = []
    for m in INCLUDE.finditer(text):
        want = include_body(m.group("path"), root)
        if m.group("body") != want:
            found.append(f"include {m.group('path')}: the embedded copy differs from the artifact")
    for m in FIGURE.finditer(text):
        want = figure_text(m.group("spec"), root)
        if m.group("value") != want:
            found.append(f"fig {m.group('spec').strip()}: the doc says {m.group('value')!r}, the artifact {want!r}")
    return found


def artifacts_cited(text: str) -> set[str]:
    dirs = {str(Path(m.group("path")).parent) for m in INCLUDE.finditer(text)}
    return dirs | {m.group("spec").split("|")[0].strip() for m in FIGURE.finditer(text)}


# -- staleness ------------------------------------------------------------------------------------
def changed_since(commit: str | None, sources: list[str], root: Path = REPO_ROOT) -> list[str] | None:
    """Sources changed in commits after ``commit`` or uncommitted now; None when git cannot tell."""
    if not commit or not sources:
        return None
    committed = subprocess.run(
        ["git", "diff", "--name-only", commit, "HEAD", "--", *sources], cwd=root, capture_output=True, text=True
    )
    if committed.returncode != 0:
        return None
    pending = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", *sources],
        cwd=root,
        capture_output=True,
        text=True,
    )
    names = set(committed.stdout.split())
    names |= {line[3:] for line in pending.stdout.splitlines() if len(line) > 3}
    return sorted(names)


def all_artifacts(root: Path = REPO_ROOT) -> list[Path]:
    return sorted(p.parent for base in ARTIFACT_DIRS for p in root.glob(f"{base}/**/{PROVENANCE}"))


def stale_report(root: Path = REPO_ROOT) -> list[str]:
    lines = []
    for directory in all_artifacts(root):
        record = read_provenance(directory)
        changed = changed_since(record.get("commit"), record.get("sources", []), root)
        name = directory.relative_to(root)
        when = f"{(record.get('commit') or '?')[:10]}, {str(record.get('date', ''))[:10]}"
        if record.get("code_changed_during_run"):
            when += ", code changed while it ran"
        elif record.get("dirty"):
            when += ", produced with uncommitted changes"
        if changed is None:
            lines.append(f"? {name} ({when}): git cannot compare (commit unknown here)")
        elif changed:
            shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
            lines.append(f"stale {name} ({when}): {len(changed)} source(s) changed since: {shown}")
        else:
            lines.append(f"fresh {name} ({when})")
    return lines + capability_notes(all_artifacts(root), cpu_capability(), root)


# -- examples -------------------------------------------------------------------------------------
@dataclass
class Example:
    name: str
    overrides: list[str]
    show: list[str]
    epoch_columns: dict[str, str]


def load_examples(path: Path) -> list[Example]:
    return load_examples_data(yaml.safe_load(path.read_text()) or {}, str(path))


def load_examples_data(data: dict[str, Any], path: str) -> list[Example]:
    examples = []
    for i, item in enumerate(data.get("examples", [])):
        if not isinstance(item, dict) or "name" not in item:
            raise DocsError(f"{path}: example {i} needs a name, got {item!r}")
        show = list(item.get("show", ["summary"]))
        unknown = set(show) - {"summary", "epochs", "epoch_table"}
        if unknown:
            raise DocsError(f"{path}: example {item['name']!r}: show must be summary/epochs/epoch_table, got {unknown}")
        examples.append(
            Example(str(item["name"]), [str(o) for o in item.get("overrides", [])], show, item.get("epoch_columns", {}))
        )
    return examples


LOG_PREFIX = re.compile(r"^\[[^\]]*\]\[rsft\]\[INFO\] - ")


def example_output(example: Example, stdout: str, run_dir: Path) -> str:
    """output.md: the command, then what ``show`` asks for, with the run dir shown repository-relative."""
    command = " ".join(["rsft-train", *example.overrides])
    parts = [f"# {example.name}", "", "```", f"$ {command}"]
    lines = [LOG_PREFIX.sub("", ln) for ln in stdout.splitlines()]
    shown_dir = str(run_dir.relative_to(REPO_ROOT))
    if "epochs" in example.show:
        parts += [ln for ln in lines if re.match(r"epoch \d+", ln)]
    if "summary" in example.show:
        start = next((i for i, ln in enumerate(lines) if ln.startswith("rsft: finished")), None)
        if start is not None:
            parts += [ln.replace(str(run_dir), shown_dir) for ln in lines[start:] if ln.strip()]
    parts.append("```")
    if "epoch_table" in example.show:
        parts += ["", *epoch_table(example, run_dir)]
    return "\n".join(parts) + "\n"


def epoch_table(example: Example, run_dir: Path) -> list[str]:
    columns = example.epoch_columns or {"sampling/acceptance_rate": "acceptance rate"}
    rows = [json.loads(ln) for ln in (run_dir / "epochs.jsonl").read_text().splitlines() if ln.strip()]
    before_path = run_dir / "before.json"
    before = json.loads(before_path.read_text()) if before_path.is_file() else {}
    out = ["| epoch | " + " | ".join(columns.values()) + " |", "|---" * (len(columns) + 1) + "|"]
    if before:
        out.append("| before fine-tuning | " + " | ".join(_num(before.get(f"before/{k}")) for k in columns) + " |")
    for row in rows:
        out.append(f"| {row['epoch']} | " + " | ".join(_num(row.get(k)) for k in columns) + " |")
    return out


def _num(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def example_figures(run_dir: Path) -> dict[str, Any]:
    figures = dict(json.loads((run_dir / "metrics.json").read_text()))
    for line in (run_dir / "epochs.jsonl").read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            figures.update({f"epoch {row['epoch']} :: {k}": v for k, v in row.items() if k != "epoch"})
    return figures


def run_example(example: Example, root: Path = REPO_ROOT) -> Path:
    """Run one example in a fresh run dir and publish ``experiments/results/examples/<name>/``."""
    run_dir = root / "outputs" / "examples" / example.name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    command = [sys.executable, "-m", "rsft.train", *example.overrides, f"hydra.run.dir={run_dir}"]
    code_at_start = git_state()
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=root)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise DocsError(f"example {example.name!r} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    record = provenance(
        " ".join(["rsft-train", *example.overrides]),
        seconds,
        relative(run_sources(example.overrides)),
        seeds=[int(yaml.safe_load((run_dir / "config.yaml").read_text())["seed"])],
        produced_with="rsft-docs examples " + example.name,
        started=code_at_start,
    )
    directory = root / EXAMPLES_DIR / example.name
    output = example_output(example, done.stdout, run_dir)
    write_artifact(directory, {"output.md": output}, example_figures(run_dir), record)
    return directory


# -- the command ----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rsft-docs", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("build", "check"):
        p = sub.add_parser(name)
        p.add_argument("files", nargs="*", help=f"default: {', '.join(DOCS)}")
    sub.add_parser("stale")
    p = sub.add_parser("examples")
    p.add_argument("names", nargs="*", help="default: every example in experiments/examples.yaml")
    args = parser.parse_args(argv)
    try:
        if args.command in ("build", "check"):
            return _build_or_check(args.command, [REPO_ROOT / f for f in (args.files or DOCS)])
        if args.command == "stale":
            print("\n".join(stale_report()) or "no artifacts")
            return 0
        examples = load_examples(REPO_ROOT / EXAMPLES)
        unknown = set(args.names) - {e.name for e in examples}
        if unknown:
            raise DocsError(f"no example(s) {sorted(unknown)} in {EXAMPLES}")
        for example in examples:
            if not args.names or example.name in args.names:
                print(f"rsft-docs: running {example.name} ...", flush=True)
                directory = run_example(example)
                print(f"  published {directory.relative_to(REPO_ROOT)}", flush=True)
        return 0
    except DocsError as err:
        print(f"rsft-docs: error: {err}", file=sys.stderr)
        return 2


def capability_notes(directories: list[Path], here: str, root: Path = REPO_ROOT) -> list[str]:
    """A note for each artifact made on a CPU of another capability than ``here`` (or not recorded): its figures
    are reproducible bitwise only on the same capability, so a rerun here may give other numbers."""
    notes = []
    for directory in directories:
        if not (directory / PROVENANCE).is_file():
            continue
        made = read_provenance(directory).get("machine", {}).get("cpu_capability")
        if made != here:
            made_on = f"a {made} CPU" if made else "a CPU whose capability was not recorded"
            notes.append(
                f"note: {directory.relative_to(root)} was produced on {made_on}, this machine is {here}: a rerun here "
                "may give other figures (same seed, same result holds bitwise on the same CPU capability)"
            )
    return notes


def _build_or_check(command: str, files: list[Path]) -> int:
    problems, cited = [], set()
    for file in files:
        text = file.read_text()
        cited |= artifacts_cited(text)
        if command == "build":
            filled = fill(text)
            if filled != text:
                file.write_text(filled)
                print(f"rsft-docs: updated {file.relative_to(REPO_ROOT)}")
        else:
            problems += [f"{file.relative_to(REPO_ROOT)}: {d}" for d in differences(text)]
    if command == "check":
        notes = capability_notes(sorted(REPO_ROOT / c for c in cited), cpu_capability())
        if notes:
            print("\n".join(notes))
    if problems:
        print("\n".join(problems) + "\n(run `rsft-docs build`, or regenerate the artifact)", file=sys.stderr)
        return 1
    return 0


def entry() -> None:
    """Console entry point (``rsft-docs``)."""
    raise SystemExit(main())


if __name__ == "__main__":
    entry()
