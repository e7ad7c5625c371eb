"""The race: every contender on every case and sample count, in one process, best of interleaved repeats.

Throughput is counted per contender as proposals/s (candidates drawn and judged) and accepted/s.
The ratio column is rsft's speed-up over the contender: on accepted/s for the samplers (what a user
waits for: Pyro's Rejector, for one, redraws many more candidates per accepted sample), on
proposals/s for the floor (which accepts nothing); there, a value of 0.8 means rsft spends 1/0.8 =
1.25× the floor's time per candidate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from benchmarks.cases import CASES, Case, normal_from_wider_normal_case
from benchmarks.contenders import CONTENDERS, run_floor, run_numpy, run_pyro, run_rsft, run_seed_loop


@dataclass
class Row:
    case: str
    n: int  # accepted samples asked for
    contender: str
    n_used: int  # accepted samples actually drawn by this contender (smaller for slow ones: extrapolated)
    proposals: int
    seconds: float  # best of the repeats
    proposals_per_s: float
    accepted_per_s: float
    ratio: float = math.nan  # rsft's speed-up over this contender (see the module docstring)
    note: str = ""


def pyro_available() -> bool:
    try:
        import pyro.distributions  # noqa: F401
    except ImportError:
        return False
    return True


def best_time(fn: Callable[[], tuple[object, int]], repeats: int) -> tuple[float, int]:
    best, drawn = math.inf, 0
    for _ in range(repeats):
        start = time.perf_counter()
        _, drawn = fn()
        best = min(best, time.perf_counter() - start)
    return best, drawn


def race(
    case: Case,
    n: int,
    *,
    chunk_size: int,
    repeats: int,
    contenders: list[str],
    pyro_max: int,
    seed_loop_proposals: int,
    seed: int = 0,
) -> list[Row]:
    """All contenders on one (case, n); repeats are interleaved so load spikes hit everyone alike."""
    rate = case.acceptance_rate
    used = {"rsft": n, "numpy": n, "floor": n}
    # Pyro redraws all unfinished slots every round: ~log(n)/rate rounds of n draws. Cap it.
    used["pyro"] = min(n, pyro_max if rate >= 0.05 else max(pyro_max // 10, 1))
    used["seed_loop"] = max(10, round(seed_loop_proposals * rate))
    runs: dict[str, Callable[[], tuple[object, int]]] = {}
    # The floor scores exactly as many candidates as rsft draws for n accepted (same chunks).
    _, rsft_drawn = run_rsft(case, n, chunk_size, seed)
    for name in contenders:
        m = used[name]
        if name == "rsft":
            runs[name] = lambda m=m: run_rsft(case, m, chunk_size, seed)
        elif name == "numpy":
            runs[name] = lambda m=m: run_numpy(case, m, chunk_size, seed)
        elif name == "pyro":
            runs[name] = lambda m=m: run_pyro(case, m, chunk_size, seed)
        elif name == "seed_loop":
            runs[name] = lambda m=m: run_seed_loop(case, m, chunk_size, seed)
        elif name == "floor":
            runs[name] = lambda: run_floor(case, rsft_drawn, chunk_size, seed)
    best = {name: (math.inf, 0) for name in runs}
    for r in range(repeats):
        for name, fn in runs.items():
            # The seed loop is slow and steady: one repeat is enough.
            if name == "seed_loop" and r > 0:
                continue
            seconds, drawn = best_time(fn, 1)
            if seconds < best[name][0]:
                best[name] = (seconds, drawn)
    rows = []
    for name, (seconds, drawn) in best.items():
        m = used[name]
        accepted = 0 if name == "floor" else m
        note = ""
        if m < n:
            note = f"measured at n={m:,}, extrapolated" if name == "seed_loop" else f"measured at n={m:,}"
        rows.append(Row(case.name, n, name, m, drawn, seconds, drawn / seconds, accepted / seconds, note=note))
    by_name = {row.contender: row for row in rows}
    if "rsft" in by_name:
        ref = by_name["rsft"]
        for row in rows:
            if row.contender == "floor":
                row.ratio = ref.proposals_per_s / row.proposals_per_s
            elif row.accepted_per_s > 0:
                row.ratio = ref.accepted_per_s / row.accepted_per_s
    return rows


def chunk_scaling(case: Case, n: int, chunks: list[int], repeats: int) -> list[dict]:
    """rsft and the floor vs chunk size on one case (proposals/s)."""
    out = []
    for chunk in chunks:
        rsft_s, drawn = math.inf, 0
        floor_s = math.inf
        for _ in range(repeats):
            s, drawn = best_time(lambda: run_rsft(case, n, chunk, 0), 1)
            rsft_s = min(rsft_s, s)
            s, _ = best_time(lambda: run_floor(case, drawn, chunk, 0), 1)
            floor_s = min(floor_s, s)
        out.append(
            {
                "case": case.name,
                "chunk_size": chunk,
                "proposals": drawn,
                "rsft_proposals_per_s": drawn / rsft_s,
                "floor_proposals_per_s": drawn / floor_s,
                "rsft_over_floor": floor_s / rsft_s,
            }
        )
    return out


def dim_scaling(dims: list[int], n: int, chunk_size: int, repeats: int, acceptance: float = 0.1) -> list[dict]:
    """N(0, I_d) from a wider Gaussian at a fixed acceptance rate: rsft, NumPy and floor vs dimension."""
    out = []
    for d in dims:
        case = normal_from_wider_normal_case(d, acceptance)
        rows = race(
            case,
            n,
            chunk_size=chunk_size,
            repeats=repeats,
            contenders=["rsft", "numpy", "floor"],
            pyro_max=0,
            seed_loop_proposals=0,
        )
        by = {row.contender: row for row in rows}
        out.append(
            {
                "dim": d,
                "proposals": by["rsft"].proposals,
                **{f"{k}_proposals_per_s": by[k].proposals_per_s for k in by},
                "rsft_over_numpy": by["numpy"].ratio,
                "rsft_over_floor": by["floor"].ratio,
            }
        )
    return out


def run_suite(
    cases: list[str],
    counts: dict[str, list[int]],
    *,
    chunk_size: int,
    repeats: int,
    contenders: list[str],
    pyro_max: int,
    seed_loop_proposals: int,
    log: Callable[[str], None] = print,
) -> list[dict]:
    rows: list[dict] = []
    for name in cases:
        case = CASES[name]()
        for n in counts[name]:
            t0 = time.perf_counter()
            result = race(
                case,
                n,
                chunk_size=chunk_size,
                repeats=repeats,
                contenders=contenders,
                pyro_max=pyro_max,
                seed_loop_proposals=seed_loop_proposals,
            )
            log(format_race(case, n, result, time.perf_counter() - t0))
            rows += [asdict(row) for row in result]
    return rows


def format_race(case: Case, n: int, rows: list[Row], wall: float) -> str:
    lines = [
        f"\n{case.label}: n={n:,} accepted, acceptance {case.acceptance_rate:.3g} (log M = {case.log_M:.4f}); "
        f"{wall:.1f} s"
    ]
    lines.append(f"  {'contender':<34} {'proposals/s':>12} {'accepted/s':>12} {'rsft x':>8}  note")
    for row in rows:
        ratio = "" if math.isnan(row.ratio) else f"{row.ratio:.2f}"
        accepted = "-" if row.contender == "floor" else f"{row.accepted_per_s:.3g}"
        lines.append(
            f"  {CONTENDERS[row.contender]:<34} {row.proposals_per_s:>12.3g} {accepted:>12} {ratio:>8}  {row.note}"
        )
    return "\n".join(lines)
