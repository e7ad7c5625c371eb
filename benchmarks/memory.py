"""Peak memory of one long sampling call: bounded by the chunk, not by the number of proposals.

Run in a fresh process so the resident-set figures are the engine's alone:

    python -m benchmarks.memory --proposals 100000000 --chunk-size 1000000

Candidates are 1-D N(0, 1) draws kept when x > 4.5 (rate 3.4e-6, so the output stays a few hundred
rows and only the chunk can make memory grow). Prints one JSON line: the resident set after a warm-up
call (the interpreter, torch and the allocator's first chunk-sized buffers), the peak over the long
call, and their difference in MB.

``--threshold 0`` keeps half the candidates instead: a large output (8 bytes a row, ``x`` and ``log_q``),
whose size ``output_mb`` reports, to measure what the output adds beyond itself:

    python -m benchmarks.memory --proposals 33554432 --chunk-size 65536 --threshold 0   # a 128 MB output
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from torch import distributions as D

from rsft import DistributionProposal, Region, rejection_sample


def peak_rss_mb() -> float:
    """High-water mark of this process's resident set (VmHWM; unlike ru_maxrss it starts afresh at exec)."""
    with open("/proc/self/status") as handle:
        kib = next(int(line.split()[1]) for line in handle if line.startswith("VmHWM:"))
    return kib / 1024


def reset_peak() -> None:
    """Restart the high-water mark at the current resident set (Linux ≥ 4.0), so the peak is the call's own."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass  # then the peak also covers the imports, which only overstates it


def current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def measure(proposals: int, chunk_size: int, threshold: float = 4.5) -> dict:
    proposal = DistributionProposal(D.Normal(0.0, 1.0))
    acceptance = Region(lambda x: x > threshold)
    rejection_sample(proposal, acceptance, num_proposals=2 * chunk_size, chunk_size=chunk_size, seed=1)  # warm-up
    baseline = current_rss_mb()
    reset_peak()
    start = time.perf_counter()
    result = rejection_sample(proposal, acceptance, num_proposals=proposals, chunk_size=chunk_size, seed=0)
    seconds = time.perf_counter() - start
    peak = peak_rss_mb()
    return {
        "proposals": proposals,
        "chunk_size": chunk_size,
        "accepted": int(result.stats["accepted"]),
        "seconds": seconds,
        "rss_after_warmup_mb": baseline,
        "peak_rss_mb": peak,
        "growth_mb": peak - baseline,
        "chunk_mb_per_field": chunk_size * 4 / 2**20,
        "output_mb": sum(v.numel() * v.element_size() for v in result.batch.values()) / 2**20,
    }


def measure_in_subprocess(proposals: int, chunk_size: int, timeout: float = 1800, threshold: float = 4.5) -> dict:
    """The same measurement in a clean interpreter (what the suite reports)."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.memory",
            "--proposals",
            str(proposals),
            "--chunk-size",
            str(chunk_size),
            "--threshold",
            str(threshold),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proposals", type=int, default=100_000_000)
    parser.add_argument("--chunk-size", type=int, default=1_000_000)
    parser.add_argument("--threshold", type=float, default=4.5, help="keep x > threshold (0: half, a large output)")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    print(json.dumps(measure(args.proposals, args.chunk_size, args.threshold)))


if __name__ == "__main__":
    main()
