"""Race rsft's sampler against NumPy, Pyro, the seed loop and the floor; memory; training overhead.

    python -m benchmarks                        # everything (about 10-20 min on 2 quiet cores)
    python -m benchmarks --quick                # a one-minute smoke run of every section
    python -m benchmarks --sections race --cases beta grid25 --counts 100000 --out results.json

Sections: race (every contender per case and count), chunks (throughput vs chunk size), dims
(throughput vs dimension), memory (peak RSS of 10^8 proposals with chunk 10^6, in a subprocess),
training (share of epoch time spent rebuilding the accepted set, one subprocess per experiment).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks import memory, suite, training_overhead
from benchmarks.cases import CASES
from rsft.tools.provenance import cpu_model, git_state, provenance, write_artifact
from rsft.tools.sources import import_closure, relative, run_sources

SECTIONS = ["race", "chunks", "dims", "memory", "training"]
#: Accepted samples per case. 10^7 only where it finishes in reasonable time on 2 cores: at 1 %
#: acceptance 10^6 accepted already means 10^8 proposals per contender.
FULL_COUNTS = {
    "beta": [10**5, 10**6, 10**7],
    "grid25": [10**5, 10**6],
    "normal10_t": [10**5, 10**6],
    "normal10_1pct": [10**5],
}
EXPERIMENTS = ["density_grid25", "density_onpolicy", "credit_german"]


def machine() -> dict:
    load = None
    try:
        with open("/proc/loadavg") as handle:
            load = [float(v) for v in handle.read().split()[:3]]
    except OSError:
        pass
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": load,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes for every section (a smoke run)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=SECTIONS)
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--counts", nargs="+", type=int, help="accepted samples per case (overrides the defaults)")
    parser.add_argument("--contenders", nargs="+", choices=list(suite.CONTENDERS), default=list(suite.CONTENDERS))
    parser.add_argument(
        "--chunk-size", type=int, default=None, help="engine chunk for every contender (default: rsft's)"
    )
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats per contender; the best counts")
    parser.add_argument(
        "--pyro-max", type=int, default=100_000, help="largest n for Pyro (10x less below 5 %% acceptance)"
    )
    parser.add_argument("--seed-loop-proposals", type=int, default=5_000, help="candidates the seed loop judges")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--epochs", type=int, default=3, help="training section: epochs per experiment")
    parser.add_argument("--memory-proposals", type=int, default=None)
    parser.add_argument("--out", default=None, help="write every figure to this JSON file")
    parser.add_argument(
        "--publish",
        metavar="NAME",
        default=None,
        help="also write benchmarks/results/NAME/ (the printed report, figures, provenance) for the docs to embed",
    )
    return parser.parse_args(argv)


RESULTS_ROOT = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None, results_root: Path = RESULTS_ROOT) -> dict:
    # no_grad as a context, not set_grad_enabled(False): main() is also called in-process by the
    # tests, and must not leave autograd switched off for whoever runs next.
    args = parse_args(argv)
    with torch.no_grad():
        if not args.publish:
            return run(args)
        results, printed, started = run_and_capture(run, args)
    command = list(argv if argv is not None else sys.argv[1:])
    publish(args, results, printed, command, results_root, started)
    return results


def run_and_capture(run_benchmark: Callable[[argparse.Namespace], dict], args: argparse.Namespace) -> tuple:
    """(results, what the run printed, the code's git state at its start): printing goes on as usual, and the
    published report is exactly what the console showed."""
    started = git_state()
    printed = io.StringIO()
    with contextlib.redirect_stdout(Tee(sys.stdout, printed)):
        results = run_benchmark(args)
    return results, printed.getvalue(), started


class Tee(io.TextIOBase):
    """Prints and keeps a copy (the published report is exactly what the console showed)."""

    def __init__(self, *streams: io.TextIOBase):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


#: The fields that name a row of each section (the rest are its figures).
ROW_IDS = {
    "race": ("case", "n", "contender"),
    "chunks": ("case", "chunk_size"),
    "dims": ("dim",),
    "memory": ("proposals", "chunk_size"),
    "training": ("experiment",),
}


def figures(results: dict) -> dict:
    """Named figures for the docs: ``<section> :: <row id> :: <field>`` for every number of every row."""
    out: dict = {"wall_seconds": results["wall_seconds"]}
    for section, ids in ROW_IDS.items():
        for row in results.get(section, []):
            name = " :: ".join(str(row[k]) for k in ids if k in row)
            for key, value in row.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ids:
                    out[f"{section} :: {name} :: {key}"] = value
    return out


def publish(
    args: argparse.Namespace,
    results: dict,
    printed: str,
    argv: list[str],
    results_root: Path,
    started: dict | None = None,
) -> Path:
    files = import_closure([Path(__file__)])
    if "training" in args.sections:
        for row in results.get("training", []):
            files |= run_sources([f"experiment={row['experiment']}"])
    command = ["python", "-m", "benchmarks", *argv]
    title = f"Benchmarks: {args.publish}"
    directory = results_root / args.publish
    return publish_report(directory, title, printed, results, figures(results), command, files, started)


def publish_report(
    directory: Path,
    title: str,
    printed: str,
    results: dict,
    named_figures: dict,
    command: list[str],
    sources: set[Path],
    started: dict | None = None,
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Write one benchmark's artifact: the report exactly as printed, results.json, figures and provenance
    (``results`` carries ``wall_seconds`` and the machine's load average at the start and the end), and any
    ``extra_files`` (name -> text, e.g. a table for the docs to include)."""
    record = provenance(
        command,
        results["wall_seconds"],
        relative(sources),
        load_average=[results["machine"]["load_average"], results["machine"]["load_average_end"]],
        started=started,
    )
    report = f"# {title}\n\n```text\n{printed.rstrip()}\n```\n"
    files = {"report.md": report, "results.json": json.dumps(results, indent=1) + "\n", **(extra_files or {})}
    write_artifact(directory, files, named_figures, record)
    print(f"published {directory}")
    return directory


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the memory and training subprocesses too
    from rsft.sampling import DEFAULT_CHUNK_SIZE

    chunk = args.chunk_size or DEFAULT_CHUNK_SIZE
    repeats = args.repeats or (1 if args.quick else 3)
    contenders = [c for c in args.contenders if c != "pyro" or suite.pyro_available()]
    info = machine()
    results: dict = {"machine": info, "chunk_size": chunk, "repeats": repeats}
    print(
        f"{info['date']}  {info['cpu']}  torch {info['torch']} ({info['torch_threads']} threads)  "
        f"load {info['load_average']}  chunk {chunk:,}  best of {repeats}"
    )
    if "pyro" in args.contenders and "pyro" not in contenders:
        print("pyro-ppl is not installed (pip install -e .[bench]): the Pyro column is skipped")
    start = time.perf_counter()

    if "race" in args.sections:
        if args.counts:
            counts = {name: args.counts for name in args.cases}
        elif args.quick:
            counts = {name: [2_000] for name in args.cases}
        else:
            counts = FULL_COUNTS
        results["race"] = suite.run_suite(
            args.cases,
            counts,
            chunk_size=chunk,
            repeats=repeats,
            contenders=contenders,
            pyro_max=min(args.pyro_max, 2_000) if args.quick else args.pyro_max,
            seed_loop_proposals=200 if args.quick else args.seed_loop_proposals,
        )
    if "chunks" in args.sections:
        chunks = [2**10, 2**14] if args.quick else [2**10, 2**12, 2**14, 2**16, 2**18, 2**20, 2**22]
        rows = []
        for name in ("beta",) if args.quick else ("beta", "grid25"):
            rows += suite.chunk_scaling(CASES[name](), 2_000 if args.quick else 10**6, chunks, repeats)
        results["chunks"] = rows
        print("\nthroughput vs chunk size (rsft and the floor, proposals/s)")
        print(f"  {'case':<8} {'chunk':>9} {'rsft':>10} {'floor':>10} {'rsft/floor':>10}")
        for r in rows:
            print(
                f"  {r['case']:<8} {r['chunk_size']:>9,} {r['rsft_proposals_per_s']:>10.3g} "
                f"{r['floor_proposals_per_s']:>10.3g} {r['rsft_over_floor']:>10.2f}"
            )
    if "dims" in args.sections:
        dims = [1, 10] if args.quick else [1, 2, 5, 10, 20, 50, 100]
        rows = suite.dim_scaling(dims, 500 if args.quick else 10**5, chunk, repeats)
        results["dims"] = rows
        print("\nthroughput vs dimension: N(0, I_d) <- N(0, s^2 I_d), s = 10^(1/d) (10 % acceptance), proposals/s")
        print(f"  {'dim':>4} {'rsft':>10} {'numpy':>10} {'floor':>10} {'rsft/numpy':>10} {'rsft/floor':>10}")
        for r in rows:
            print(
                f"  {r['dim']:>4} {r['rsft_proposals_per_s']:>10.3g} {r['numpy_proposals_per_s']:>10.3g} "
                f"{r['floor_proposals_per_s']:>10.3g} {r['rsft_over_numpy']:>10.2f} {r['rsft_over_floor']:>10.2f}"
            )
    if "memory" in args.sections:
        total = args.memory_proposals or (10**6 if args.quick else 10**8)
        plan = [(total, 10**5)] if args.quick else [(total // 10, 10**6), (total, 10**6), (total, 10**5)]
        rows = [memory.measure_in_subprocess(p, c) for p, c in plan]
        results["memory"] = rows
        print("\npeak memory of one sampling call (fresh process each; 1-D candidates, output of a few hundred rows)")
        print(
            f"  {'proposals':>12} {'chunk':>10} {'after warm-up MB':>17} "
            f"{'peak MB':>8} {'growth MB':>10} {'seconds':>8}"
        )
        for r in rows:
            print(
                f"  {r['proposals']:>12,} {r['chunk_size']:>10,} {r['rss_after_warmup_mb']:>17.0f} "
                f"{r['peak_rss_mb']:>8.0f} {r['growth_mb']:>10.1f} {r['seconds']:>8.1f}"
            )
    if "training" in args.sections:
        extra = ["debug=fast"] if args.quick else []
        rows = []
        for experiment in EXPERIMENTS[:1] if args.quick else EXPERIMENTS:
            rows.append(training_overhead.measure_in_subprocess(experiment, 2 if args.quick else args.epochs, extra))
        results["training"] = rows
        print(
            "\ntraining overhead: share of epoch wall time spent rebuilding the accepted set (epochs after the first)"
        )
        print(f"  {'experiment':<18} {'epoch s':>8} {'rebuild s':>9} {'share':>6} {'proposal':>9} {'acceptance':>10}")
        for r in rows:
            print(
                f"  {r['experiment']:<18} {r['epoch_seconds']:>8.2f} {r['rebuild_seconds']:>9.3f} "
                f"{r['rebuild_share']:>6.1%} {r['proposal_share_of_sampling']:>9.0%} "
                f"{r['acceptance_share_of_sampling']:>10.0%}"
            )
        print("  (proposal / acceptance: their shares of the engine's sampling time)")

    results["wall_seconds"] = time.perf_counter() - start
    results["machine"]["load_average_end"] = machine()["load_average"]
    print(f"\ndone in {results['wall_seconds']:.0f} s; load average now {results['machine']['load_average_end']}")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=1)
        print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
