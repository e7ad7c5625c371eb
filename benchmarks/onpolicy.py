"""The self-improving (on-policy) sampler against the best fixed proposals, where fixed proposals die.

    python -m benchmarks.onpolicy                      # both d = 8 targets, seed 0 (about 3 min on a quiet core)
    python -m benchmarks.onpolicy --targets twisted --seeds 0 1 2 --publish onpolicy_twisted
    python -m benchmarks.onpolicy --frontier --jobs 2 --publish onpolicy_frontier   # d = 8 to 64, seeds 0-2

Per target (REFERENCES §7, §11) and dimension: the best fixed N(0, s²I) and the best fixed isotropic
Student-t (df 3) over a grid of scales, each judged by its envelope (the largest log p/q over draws of the
proposal *and* exact draws of the target, × 1.2: a lower bound on the true sup, so its rate is if anything
flattering), then timed in the engine with that envelope; and the on-policy run of
``experiment=onpolicy_<target>`` (a flow proposing for itself with a defensive part, tempered start,
carried envelope). Only β = 1 rounds count as samples of the target: their rate and accepted/s are
compared, and their pooled samples are tested against the exact marginals (Kolmogorov-Smirnov per
coordinate, Bonferroni, α = 1e-6) and along fixed random directions (the joint law; KS, Bonferroni).
The power check: the first tempered round's samples (exact for π_β, β < 1, not for p) must fail the
marginal test. With several ``--seeds`` the on-policy run is repeated per seed (the fixed proposals, a
property of the target, are measured once) and the report gives each seed's figures and the worst over
seeds: a goal met "in every seed" is read from the minimum.

Two figures judge the last round's proposal q (the flow it proposed with, its checkpoint from the round
before, widened and mixed with the defensive part as it drew): the ESS fraction of the flow as an
importance sampler of p, (Σw)² / (n Σw²) with w = p / q_flow over its own draws, and the envelope's
deficit on exact draws of p, E_p[(1 − M q / p)₊]: the total-variation distance between what rejection under
the round's final M returns and p itself (an auto envelope is estimated from the proposal's draws; where p / q
exceeds it somewhere the proposal rarely goes, the samples are short of that mass, and exact draws see it).

``--frontier`` runs every (target, d) of FRONTIER with ``task.dim=d`` (seeds 0 1 2 unless given), and with
``--publish`` also writes ``table.md`` (one row per target and d, per-seed figures separated by " / ")
and ``frontier.png`` (rate and ESS against d, on-policy against fixed, log scale). ``--jobs 2`` runs two
cells at a time, each in its own process with one thread; ``--cells-dir DIR`` keeps each finished cell
there and reuses it when the same cell is asked for again with the same settings (the report lists them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from scipy import stats

from benchmarks.__main__ import RESULTS_ROOT, machine, publish_report, run_and_capture
from rsft.acceptance.density import DensityRatio
from rsft.proposals.distribution import DistributionProposal, isotropic_normal, isotropic_student_t
from rsft.run.config import compose
from rsft.sampling import rejection_sample
from rsft.targets import make_target
from rsft.tools.provenance import git_state
from rsft.tools.sources import import_closure, run_sources
from rsft.train import train

#: the scales tried for the fixed proposals of the targets' first benchmark (d = 8) and of the frontier
FRONTIER_SCALES = [0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 7.0, 10.0, 14.0]
#: target -> (experiment, fixed-proposal scales to try)
TARGETS = {
    "twisted": ("onpolicy_twisted", [2.0, 3.0, 4.0, 5.0, 7.0, 10.0]),
    "corners": ("onpolicy_corners", [2.0, 2.5, 3.0, 3.5, 4.0, 5.0]),
    "funnel": ("onpolicy_funnel", FRONTIER_SCALES),
    "manywell": ("onpolicy_manywell", FRONTIER_SCALES),
}
#: the frontier: target -> dimensions (REFERENCES §7, §11)
FRONTIER = {"twisted": [8, 16, 32, 64], "corners": [8, 16, 32, 64], "funnel": [10, 32], "manywell": [8, 32]}
#: --quick: a smoke run of the whole pipeline in seconds (nothing is expected to reach β = 1)
QUICK_CELLS = {"twisted": [4], "manywell": [4]}
QUICK_OVERRIDES = [
    "trainer.max_epochs=2",
    "sampler.num_accepted=300",
    "sampler.chunk_size=4096",
    "model.pretrain.steps=5",
    "model.batch_size=128",
]
STUDENT_DF = 3.0
ALPHA = 1e-6
MARGIN = 1.2
#: random unit directions for the joint goodness-of-fit check (fixed: the same test for every run)
PROJECTIONS, PROJECTION_SEED = 8, 2026
CHUNK = 100_000


# -- goodness of fit -------------------------------------------------------------------------------
def uniform_pvalue(u: torch.Tensor) -> float:
    """Bonferroni-combined KS p-value of the columns of u against U(0, 1)."""
    u = u.double().numpy()
    pvalues = [stats.kstest(u[:, j], "uniform").pvalue for j in range(u.shape[1])]
    return min(1.0, min(pvalues) * len(pvalues))


def marginal_pvalue(target, x: torch.Tensor) -> float:
    """Bonferroni-combined KS p-value of x against the target's exact one-dimensional marginals.

    Twisted Gaussian: φ_b(x) ~ N(0, diag(s₁², 1, …)) coordinate by coordinate. Gaussian mixture: coordinate j
    is the mixture of N(μ_kj, σ²) over the components k. Funnel: v is (truncated) N(0, σ_v²), x_i e^(−v/2)
    is N(0, 1). Many-well: x₁ has the double well's CDF (numerical integral), x₂ is N(0, 1).
    """
    if not hasattr(target, "marginal_uniforms"):
        raise TypeError(f"no exact marginals known for {type(target).__name__}")
    return uniform_pvalue(target.marginal_uniforms(x))


def projection_directions(dim: int, k: int = PROJECTIONS) -> torch.Tensor:
    g = torch.Generator().manual_seed(PROJECTION_SEED)
    u = torch.randn((k, dim), generator=g, dtype=torch.float64)
    return u / u.norm(dim=1, keepdim=True)


def joint_pvalue(target, x: torch.Tensor) -> float:
    """Bonferroni-combined KS p-value along PROJECTIONS fixed random directions (the joint law: a sampler that
    keeps the right marginals but the wrong modes, e.g. half of the corners, fails it)."""
    return uniform_pvalue(target.projection_uniforms(x, projection_directions(target.dim)))


# -- importance-sampling figures ---------------------------------------------------------------------
def ess_fraction(log_w: torch.Tensor) -> float:
    """(Σw)² / (n Σw²), in log space."""
    log_w = log_w.double()
    return math.exp(2 * float(torch.logsumexp(log_w, 0)) - float(torch.logsumexp(2 * log_w, 0))) / log_w.numel()


def envelope_deficit(log_p: torch.Tensor, log_q: torch.Tensor, log_M: float) -> float:
    """E_p[(1 − M q / p)₊] over exact draws of p: the total-variation distance between rejection sampling
    under envelope M and p (0 when M q ≥ p wherever p has mass)."""
    return float((1.0 - (log_M + log_q.double() - log_p.double()).exp()).clamp(min=0.0).mean())


# -- the fixed proposals -------------------------------------------------------------------------------
def fixed_proposal(family: str, dim: int, scale: float):
    if family == "gaussian":
        return isotropic_normal(dim, scale)
    return isotropic_student_t(dim, STUDENT_DF, scale)


def _chunks(total: int):
    for start in range(0, total, CHUNK):
        yield min(CHUNK, total - start)


def best_fixed(target, family: str, scales: list[float], draws: int, seed: int) -> dict:
    """The scale whose envelope (max log p/q over proposal and target draws, × margin) is smallest; its ESS
    fraction on its own draws, and its envelope's deficit on fresh exact draws."""
    g = torch.Generator().manual_seed(seed)
    exact = torch.cat([target.sample(n, g) for n in _chunks(max(draws // 10, 1))])
    log_p_exact = target.log_prob(exact)
    rows = []
    for s in scales:
        q = fixed_proposal(family, target.dim, s)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            log_w = torch.cat([(target.log_prob(x) - q.log_prob(x)) for x in (q.sample((n,)) for n in _chunks(draws))])
        log_M = max(float(log_w.max()), float((log_p_exact - q.log_prob(exact)).max())) + math.log(MARGIN)
        rows.append({"scale": s, "log_M": log_M, "rate_bound": math.exp(-log_M), "ess": ess_fraction(log_w)})
    best = min(rows, key=lambda r: r["log_M"])
    fresh = target.sample(max(draws // 10, 1), g)
    q = fixed_proposal(family, target.dim, best["scale"])
    deficit = envelope_deficit(target.log_prob(fresh), q.log_prob(fresh), best["log_M"])
    return {"family": family, "scales": rows, **best, "envelope_tv": deficit}


def time_fixed(target, family: str, scale: float, log_M: float, proposals: int, seed: int) -> dict:
    q = DistributionProposal(fixed_proposal(family, target.dim, scale))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a violated fixed envelope warns; its count is reported
        res = rejection_sample(q, DensityRatio(target, log_M=log_M), num_proposals=proposals, seed=seed)
    s = res.stats
    return {
        "proposals": s["proposals"],
        "accepted": s["accepted"],
        "rate": s["acceptance_rate"],
        "seconds": s["seconds"],
        "accepted_per_s": s["accepted"] / s["seconds"],
        "violations": s["envelope_violations"],
    }


def fixed_baselines(name: str, dim: int | None, args: argparse.Namespace) -> dict:
    """The best fixed Gaussian and the best fixed Student-t of one (target, d), each timed in the engine."""
    experiment, scales = TARGETS[name]
    target = build_target(experiment, dim)
    if dim is not None:
        scales = FRONTIER_SCALES
    out = {}
    for family in ("gaussian", "student_t"):
        best = best_fixed(target, family, scales, args.draws, args.seeds[0])
        out[family] = best | time_fixed(
            target, family, best["scale"], best["log_M"], args.fixed_proposals, args.seeds[0]
        )
    return out


# -- the on-policy run -------------------------------------------------------------------------------
def build_target(experiment: str, dim: int | None):
    extra = [] if dim is None else [f"task.dim={dim}"]
    cfg = compose([f"experiment={experiment}", "paths.output_dir=/tmp/unused", *extra])
    return make_target(**{k: v for k, v in cfg.task.target.items() if k != "_target_"})


def on_policy(experiment: str, target, seed: int, extra: list[str], judge_draws: int = 100_000) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        cfg = compose(
            [
                f"experiment={experiment}",
                f"seed={seed}",
                "logger=none",
                "plot=false",
                "eval_before=false",
                "sampler.save_accepted=true",
                f"paths.output_dir={run_dir}",
                # every round's weights, to rebuild the proposal of the last round afterwards
                "+callbacks.every_round._target_=benchmarks.onpolicy.RoundWeights",
                f"+callbacks.every_round.dirpath={Path(tmp) / 'rounds'}",
                *extra,
            ]
        )
        start = time.perf_counter()
        train(cfg)
        wall = time.perf_counter() - start
        rows = [json.loads(line) for line in (run_dir / "epochs.jsonl").read_text().splitlines()]
        batches = {
            r["epoch"]: torch.load(run_dir / "accepted" / f"epoch_{r['epoch']:03d}.pt", weights_only=True)["x"]
            for r in rows
        }
        judged = judge_rounds(target, cfg, rows, Path(tmp) / "rounds", judge_draws, seed)
    rounds = [
        {
            "epoch": r["epoch"],
            "beta": r["sampling/beta"],
            "rate": r["sampling/acceptance_rate"],
            "seconds": r["sampling/seconds"],
            "accepted_per_s": r["sampling/accepted"] / r["sampling/seconds"],
            "log_M": r["sampling/log_M"],
            "thinned": r.get("sampling/thinned", 0.0),
            "proposals": r["sampling/proposals"],
            **({"envelope_tv": judged["deficits"][r["epoch"]]} if r["epoch"] in judged["deficits"] else {}),
        }
        for r in rows
    ]
    exact = [r for r in rounds if r["beta"] == 1.0]
    tempered = [r for r in rounds if r["beta"] < 1.0]
    out: dict = {"rounds": rounds, "wall_seconds": wall, "exact_rounds": len(exact)}
    if "flow_ess" in judged:
        out["flow_ess"] = judged["flow_ess"]
    if rounds[-1].get("envelope_tv") is not None:  # the last round's, when it is a β = 1 round
        out["envelope_tv"] = rounds[-1]["envelope_tv"]
    if judged["deficits"]:
        out["worst_envelope_tv"] = max(judged["deficits"].values())
    if exact:
        last = exact[-1]
        pooled = torch.cat([batches[r["epoch"]] for r in exact])
        exact_seconds = sum(r["seconds"] for r in exact)
        out |= {
            "first_exact_round": exact[0]["epoch"],
            "rate": last["rate"],
            "accepted_per_s": last["accepted_per_s"],
            "log_M": last["log_M"],
            # the β = 1 rounds together: the rate is not steady from round to round (the envelope rises in a
            # round that finds a hole in the flow and falls back by at most max_drop nats per round)
            "best_exact_rate": max(r["rate"] for r in exact),
            "exact_accepted_per_s": pooled.shape[0] / exact_seconds if exact_seconds > 0 else math.nan,
            "exact_samples": pooled.shape[0],
            "end_to_end_accepted_per_s": pooled.shape[0] / wall,
            "gof_p": marginal_pvalue(target, pooled),
            "joint_gof_p": joint_pvalue(target, pooled),
        }
    if tempered:  # the power check: samples of π_β, β < 1, are not samples of p
        out["tempered_gof_p"] = marginal_pvalue(target, batches[tempered[0]["epoch"]])
        out["tempered_beta"] = tempered[0]["beta"]
    return out


class RoundWeights(pl.Callback):
    """Keeps the model's weights at the end of every round: the next round proposes with them."""

    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)

    @staticmethod
    def file_name(epoch: int) -> str:
        return f"epoch_{epoch:03d}.pt"

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        torch.save(pl_module.state_dict(), self.dirpath / self.file_name(trainer.current_epoch))


@torch.no_grad()
def judge_rounds(target, cfg, rows: list[dict], weights_dir: Path, draws: int, seed: int) -> dict:
    """Rebuild the proposal of every β = 1 round (the weights saved after the round before it, widened and mixed
    as it drew) and measure its envelope's deficit on exact draws of p; and the ESS fraction of the flow that
    proposed the last round, as an importance sampler of p (w = p / q_flow over its own draws)."""
    import hydra

    proposal = hydra.utils.instantiate(cfg.proposal, _convert_="all")
    model = hydra.utils.instantiate(cfg.model.net, _convert_="all")
    model.eval()
    proposal.bind(model)
    g = torch.Generator().manual_seed(seed + 7919)
    exact = torch.cat([target.sample(n, g) for n in _chunks(draws)])
    log_p_exact = target.log_prob(exact)

    def load(epoch: int) -> None:  # round `epoch` proposed with the weights saved after the round before it
        model.load_state_dict(torch.load(weights_dir / RoundWeights.file_name(epoch - 1), weights_only=True))

    out: dict = {"deficits": {}}
    for r in rows:
        if r["epoch"] > 0 and r["sampling/beta"] == 1.0:  # a tempered round's M bounds π_β, not p
            load(r["epoch"])
            out["deficits"][r["epoch"]] = envelope_deficit(log_p_exact, proposal.log_prob(exact), r["sampling/log_M"])
    if rows[-1]["epoch"] > 0:
        load(rows[-1]["epoch"])
        log_w = []
        for n in _chunks(draws):
            x, log_q = model.sample_with_log_prob(n, g)
            log_w.append(target.log_prob(x) - log_q)
        out["flow_ess"] = ess_fraction(torch.cat(log_w))
    return out


def seed_task(name: str, dim: int | None, seed: int, overrides: list[str], judge_draws: int) -> dict:
    experiment = TARGETS[name][0]
    target = build_target(experiment, dim)
    extra = ([] if dim is None else [f"task.dim={dim}"]) + overrides
    return on_policy(experiment, target, seed, extra, judge_draws)


# -- cells, jobs and the cache ---------------------------------------------------------------------
def cell_key(name: str, dim: int | None) -> str:
    return name if dim is None else f"{name} d={dim}"


def cells_of(args: argparse.Namespace) -> list[tuple[str, int | None]]:
    if args.quick:
        return [(name, d) for name, dims in QUICK_CELLS.items() for d in dims]
    if args.frontier:
        return [(name, d) for name, dims in (args.only or FRONTIER).items() for d in dims]
    return [(name, d) for name in args.targets for d in (args.dims or [None])]


def _run_task(task: tuple, args: argparse.Namespace) -> dict:
    torch.set_num_threads(1)
    kind, name, dim, seed = task
    if kind == "fixed":
        return fixed_baselines(name, dim, args)
    return seed_task(name, dim, seed, args.overrides, args.judge_draws)


def _task_file(cells_dir: Path, task: tuple) -> Path:
    kind, name, dim, seed = task
    return cells_dir / f"{name}_d{dim or 'default'}_{kind if kind == 'fixed' else f'seed{seed}'}.json"


def _settings(task: tuple, args: argparse.Namespace) -> dict:
    """What a cached cell must have been run with to be reused: the benchmark's settings and the cell's whole
    composed config (an edited experiment file is a different cell)."""
    kind, name, dim, seed = task
    extra = ([] if dim is None else [f"task.dim={dim}"]) + (args.overrides if kind == "seed" else [])
    cfg = compose([f"experiment={TARGETS[name][0]}", f"seed={seed or 0}", "paths.output_dir=/tmp/unused", *extra])
    digest = hashlib.sha256(OmegaConf.to_yaml(cfg, resolve=True).encode()).hexdigest()[:16]
    if kind == "fixed":
        scales = FRONTIER_SCALES if dim is not None else TARGETS[name][1]
        return {
            "draws": args.draws,
            "fixed_proposals": args.fixed_proposals,
            "seed": args.seeds[0],
            "scales": scales,
            "config": digest,
        }
    return {"overrides": args.overrides, "judge_draws": args.judge_draws, "config": digest}


def run_tasks(tasks: list[tuple], args: argparse.Namespace) -> tuple[dict, list[str]]:
    """Each task's result; tasks found in ``--cells-dir`` with the same settings are reused (listed)."""
    results, reused, todo = {}, [], []
    cells_dir = Path(args.cells_dir) if args.cells_dir else None
    for task in tasks:
        path = cells_dir and _task_file(cells_dir, task)
        if path and path.is_file():
            saved = json.loads(path.read_text())
            if saved["settings"] == _settings(task, args):
                results[task] = saved["result"]
                reused.append(f"{path.name} (commit {saved['commit'][:10]}{', dirty' if saved['dirty'] else ''})")
                continue
        todo.append(task)

    def keep(task: tuple, result: dict) -> None:
        results[task] = result
        if cells_dir:
            cells_dir.mkdir(parents=True, exist_ok=True)
            state = git_state()
            record = {"settings": _settings(task, args), "commit": state.get("commit") or "", "result": result}
            record["dirty"] = bool(state.get("dirty"))
            _task_file(cells_dir, task).write_text(json.dumps(record) + "\n")

    if args.jobs <= 1:
        for task in todo:
            keep(task, _run_task(task, args))
    else:
        os.environ["OMP_NUM_THREADS"] = "1"  # the workers inherit it
        context = get_context("spawn")
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context, max_tasks_per_child=1) as pool:
            futures = {task: pool.submit(_run_task, task, args) for task in todo}
            for task, future in futures.items():
                keep(task, future.result())
    return results, reused


# -- the run and its report ---------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(1)
    info = machine()
    print(f"{info['date']}  {info['cpu']}  torch {info['torch']} (1 thread)  load {info['load_average']}")
    start = time.perf_counter()
    cells = cells_of(args)
    tasks = [("fixed", name, dim, None) for name, dim in cells]
    tasks += [("seed", name, dim, seed) for name, dim in cells for seed in args.seeds]
    done, reused = run_tasks(tasks, args)
    results: dict = {"machine": info, "targets": {}, "frontier": any(d is not None for _, d in cells)}
    if getattr(args, "only", None):  # the frontier's cells left out, named in the table
        results["not_run"] = [
            f"{n} d={d}" for n, dims in FRONTIER.items() for d in dims if d not in args.only.get(n, [])
        ]
    for name, dim in cells:
        experiment = TARGETS[name][0]
        fixed = done[("fixed", name, dim, None)]
        per_seed = {seed: done[("seed", name, dim, seed)] for seed in args.seeds}
        target = build_target(experiment, dim)
        row = {
            "experiment": experiment,
            "dim": target.dim,
            # the probability mass a truncated target removes (the funnel's v < v_min), computed exactly
            "target": {"truncated_mass": target.truncated_mass()} if hasattr(target, "truncated_mass") else {},
            "fixed": fixed["gaussian"],
            "student_t": fixed["student_t"],
            "on_policy": per_seed[args.seeds[0]],  # the first seed's run, in full
            "seeds": {str(seed): seed_summary(run, fixed["gaussian"]) for seed, run in per_seed.items()},
            "rounds_by_seed": {str(seed): run["rounds"] for seed, run in per_seed.items()},
        }
        results["targets"][cell_key(name, dim)] = row
        print_cell(cell_key(name, dim), row, args.seeds)
    if reused:
        print(f"\n{len(reused)} cells reused from {args.cells_dir}: " + ", ".join(reused))
    results["reused_cells"] = reused
    if results["frontier"]:
        print("\n" + frontier_table(results))
    results["wall_seconds"] = time.perf_counter() - start
    results["machine"]["load_average_end"] = machine()["load_average"]
    print(f"\nwall {results['wall_seconds']:.0f} s")
    return results


def print_cell(key: str, row: dict, seeds: list[int]) -> None:
    f, t, o = row["fixed"], row["student_t"], row["on_policy"]
    print(f"\n{key} (experiment={row['experiment']}, d={row['dim']})")
    if row["target"].get("truncated_mass"):
        print(f"  truncated target: the mass removed is {row['target']['truncated_mass']:.4g} (exact)")
    for part in (f, t):
        family = "Gaussian" if part is f else f"Student-t (df {STUDENT_DF:g})"
        print(
            f"  best fixed {family}: "
            + ", ".join(f"s={r['scale']:g} rate≤{r['rate_bound']:.2g}" for r in part["scales"])
        )
        print(
            f"  fixed {family} s = {part['scale']:g}: envelope log M {part['log_M']:.2f} "
            f"(rate {part['rate_bound']:.3g}), ESS fraction {part['ess']:.3g}; engine: {part['accepted']:,} of "
            f"{part['proposals']:,} accepted, {part['accepted_per_s']:.3g}/s, {part['violations']:,} "
            "envelope violations"
        )
    print("  on-policy rounds: " + "; ".join(round_text(r) for r in o["rounds"]))
    if "rate" in o:
        print(
            f"  on-policy at β = 1 (last round): rate {o['rate']:.3g} ({times_fixed(o['rate'], f['rate_bound'])} the "
            f"fixed), {o['accepted_per_s']:.3g} accepted/s ({speedup(o['accepted_per_s'], f['accepted_per_s'])}); "
            f"{o['exact_samples']:,} exact samples in {o['exact_rounds']} rounds, "
            f"{o['end_to_end_accepted_per_s']:.3g}/s end to end (training and tempered rounds included), "
            f"wall {o['wall_seconds']:.0f} s"
        )
        print(
            f"  goodness of fit to the exact marginals (KS, Bonferroni over {row['dim']} coordinates): "
            f"β = 1 samples p = {o['gof_p']:.3g}, along {PROJECTIONS} directions p = {o['joint_gof_p']:.3g}; first "
            f"tempered round (β {o.get('tempered_beta', math.nan):.3g}) p = {o.get('tempered_gof_p', math.nan):.3g} "
            f"(α = {ALPHA:g})"
        )
    else:
        print(f"  on-policy never reached β = 1 (wall {o['wall_seconds']:.0f} s)")
    if "flow_ess" in o:
        deficit = ""
        if "envelope_tv" in o:
            deficit = (
                f"; envelope deficit on exact draws E_p[(1 − Mq/p)₊] = {o['envelope_tv']:.3g} (worst β = 1 round "
                f"{o['worst_envelope_tv']:.3g})"
            )
        print(f"  the last round's proposal: flow ESS fraction {o['flow_ess']:.3g}{deficit}")
    if len(seeds) > 1:
        print(f"  per seed (the lines above are seed {seeds[0]}'s):")
        for seed, summary in row["seeds"].items():
            print("    " + seed_line(seed, summary))
            print(
                "      rounds: "
                + "; ".join(f"β {r['beta']:.3g} rate {r['rate']:.3g}" for r in row["rounds_by_seed"][seed])
            )


def times_fixed(rate: float, fixed_bound: float) -> str:
    """The on-policy rate as a multiple of the fixed proposal's; a bound that underflows to 0 (the funnel's
    Gaussian envelopes, log M in the thousands) has no finite multiple."""
    if fixed_bound > 0:
        return f"{rate / fixed_bound:.3g}×"
    return "unboundedly many times (its envelope's rate underflows to 0)"


def round_text(r: dict) -> str:
    deficit = f" deficit {r['envelope_tv']:.1g}" if "envelope_tv" in r else ""
    return f"β {r['beta']:.3g} rate {r['rate']:.3g}{deficit}"


def seed_summary(onp: dict, fixed: dict) -> dict:
    """One seed's on-policy figures against the fixed Gaussian's (None where a figure has no value: the run
    never reached β = 1, or the fixed Gaussian accepted nothing, which leaves the speed-up unbounded)."""
    judged = {k: onp[k] for k in ("flow_ess", "envelope_tv", "worst_envelope_tv") if k in onp}
    if "rate" not in onp:
        return {"reached_beta_one": False, "wall_seconds": onp["wall_seconds"], **judged}
    return {
        "reached_beta_one": True,
        "first_exact_round": onp["first_exact_round"],
        "rate": onp["rate"],
        "rate_ratio": onp["rate"] / fixed["rate_bound"] if fixed["rate_bound"] > 0 else None,
        "accepted_per_s": onp["accepted_per_s"],
        "accepted_per_s_ratio": (
            onp["accepted_per_s"] / fixed["accepted_per_s"] if fixed["accepted_per_s"] > 0 else None
        ),
        "best_exact_rate_ratio": onp["best_exact_rate"] / fixed["rate_bound"] if fixed["rate_bound"] > 0 else None,
        "exact_accepted_per_s_ratio": (
            onp["exact_accepted_per_s"] / fixed["accepted_per_s"] if fixed["accepted_per_s"] > 0 else None
        ),
        "exact_samples": onp["exact_samples"],
        "gof_p": onp["gof_p"],
        **({"joint_gof_p": onp["joint_gof_p"], "log_M": onp["log_M"]} if "joint_gof_p" in onp else {}),
        "wall_seconds": onp["wall_seconds"],
        **judged,
    }


def seed_line(seed: str, row: dict) -> str:
    if not row["reached_beta_one"]:
        return f"seed {seed}: never reached β = 1 (wall {row['wall_seconds']:.0f} s)"

    def speed(ratio: float | None) -> str:
        return "unbounded (the fixed accepted none)" if ratio is None else f"{ratio:.3g}× the fixed"

    def times(ratio: float | None) -> str:
        return "unbounded" if ratio is None else f"{ratio:.3g}×"

    return (
        f"seed {seed}: β = 1 from round {row['first_exact_round']}; last round: rate {row['rate']:.3g} "
        f"({times(row['rate_ratio'])} the fixed), accepted/s {speed(row['accepted_per_s_ratio'])}; best β = 1 round "
        f"{times(row['best_exact_rate_ratio'])} the fixed's rate; all β = 1 rounds: accepted/s "
        f"{speed(row['exact_accepted_per_s_ratio'])}, {row['exact_samples']:,} exact samples, GoF p = "
        f"{row['gof_p']:.3g}; wall {row['wall_seconds']:.0f} s"
    )


def speedup(on_policy: float, fixed: float) -> str:
    return f"{on_policy / fixed:.3g}×" if fixed > 0 else "the fixed Gaussian accepted none"


# -- the frontier's table and plot ------------------------------------------------------------------
def _log10_rate(log_M: float) -> float:
    return -log_M / math.log(10)


def _per_seed(row: dict, key: str, fmt: str) -> str:
    values = [s.get(key) for s in row["seeds"].values()]
    return " / ".join("—" if v is None else format(v, fmt) for v in values)


def frontier_table(results: dict) -> str:
    """One row per (target, d): the on-policy figures per seed (" / "), the fixed proposals' once."""
    lines = [
        "| target | d | β = 1 in | first β = 1 round | last-round rate | accepted/s | flow ESS | log M | "
        "envelope deficit: last round | worst β = 1 round | GoF p (marg. / joint, min) | fixed N(0, s²I): s, rate, "
        "ESS | Student-t: s, rate, ESS | wall s (max) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, row in results["targets"].items():
        seeds = row["seeds"].values()
        reached = [s for s in seeds if s["reached_beta_one"]]
        gof = "—"
        if reached:
            gof = f"{min(s['gof_p'] for s in reached):.2g} / {min(s.get('joint_gof_p', math.nan) for s in reached):.2g}"
        f, t = row["fixed"], row["student_t"]
        lines.append(
            f"| {key.split(' ')[0]} | {row['dim']} | {len(reached)} of {len(row['seeds'])} | "
            f"{_per_seed(row, 'first_exact_round', 'd')} | {_per_seed(row, 'rate', '.2g')} | "
            f"{_per_seed(row, 'accepted_per_s', '.3g')} | {_per_seed(row, 'flow_ess', '.2g')} | "
            f"{_per_seed(row, 'log_M', '.1f')} | {_per_seed(row, 'envelope_tv', '.1g')} | "
            f"{_per_seed(row, 'worst_envelope_tv', '.1g')} | {gof} | "
            f"{f['scale']:g}, 1e{_log10_rate(f['log_M']):.1f}, {f['ess']:.1g} | "
            f"{t['scale']:g}, 1e{_log10_rate(t['log_M']):.1f}, {t['ess']:.1g} | "
            f"{max(s['wall_seconds'] for s in seeds):.0f} |"
        )
    if results.get("not_run"):
        lines.append(f"\nNot run in this artifact (`--only`): {', '.join(results['not_run'])}.")
    return "\n".join(lines)


def _median(values: list) -> float:
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else math.nan


#: the rate plot's floor (log10): fixed envelopes below it are drawn on it with their exponent
RATE_FLOOR = -90


def frontier_plot(results: dict, path: Path) -> None:
    """Rate (log10, from the envelope) and flow ESS against d: on-policy per seed against the fixed proposals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_target: dict[str, list] = {}
    for key, row in results["targets"].items():
        by_target.setdefault(key.split(" ")[0], []).append(row)
    fig, (ax_rate, ax_ess) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, (name, rows) in enumerate(by_target.items()):
        colour = f"C{i}"
        dims = [r["dim"] for r in rows]
        for ax, key in ((ax_rate, "rate"), (ax_ess, "flow_ess")):
            for r in rows:
                values = [s.get(key) for s in r["seeds"].values()]
                values = [math.log10(v) if key == "rate" else v for v in values if v]
                ax.scatter([r["dim"]] * len(values), values, color=colour, s=18)
            medians = [_median([s.get(key) for s in r["seeds"].values()]) for r in rows]
            medians = [math.log10(m) if key == "rate" and m > 0 else m for m in medians]
            ax.plot(dims, medians, color=colour, label=f"{name}: on-policy")
        for family, style in (("fixed", "--x"), ("student_t", ":^")):
            rates = [_log10_rate(r[family]["log_M"]) for r in rows]
            # A bound far below the axis (the funnel's Gaussians: 1e-2181) sits on its floor, labelled.
            ax_rate.plot(dims, [max(v, RATE_FLOOR) for v in rates], style, color=colour, ms=5)
            for d, v in zip(dims, rates):
                if v < RATE_FLOOR:
                    ax_rate.annotate(
                        f"1e{v:.0f}",
                        (d, RATE_FLOOR),
                        textcoords="offset points",
                        xytext=(3, 4),
                        fontsize=7,
                        color=colour,
                    )
            ax_ess.plot(dims, [max(r[family]["ess"], 1e-12) for r in rows], style, color=colour, ms=5)
    ax_rate.set(xscale="log", xlabel="d", ylabel="log10 exact acceptance rate", title="rate (fixed: envelope bound)")
    ax_rate.set_ylim(RATE_FLOOR - 3, 3)
    ax_ess.set(xscale="log", yscale="log", xlabel="d", ylabel="ESS fraction", title="importance-sampling ESS")
    for ax in (ax_rate, ax_ess):
        ax.set_xticks(sorted({r["dim"] for rows in by_target.values() for r in rows}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.get_xaxis().set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax_rate.plot([], [], "k--x", label="best fixed Gaussian")
    ax_rate.plot([], [], "k:^", label="best fixed Student-t")
    handles, labels = ax_rate.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=len(labels))
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110, metadata={"Software": None})
    plt.close(fig)
    os.replace(tmp, path)


# -- figures and publishing ---------------------------------------------------------------------------
def figures(results: dict) -> dict:
    out: dict = {"wall_seconds": results["wall_seconds"]}
    for name, row in results["targets"].items():
        for part in ("target", "fixed", "student_t", "on_policy"):
            for key, value in row.get(part, {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    out[f"{name} :: {part} :: {key}"] = value
        onp, fixed = row["on_policy"], row["fixed"]
        if "rate" in onp:
            out[f"{name} :: rate_ratio"] = onp["rate"] / fixed["rate_bound"] if fixed["rate_bound"] > 0 else None
            # None when the fixed Gaussian accepted nothing in its timed run: no finite ratio to report
            out[f"{name} :: accepted_per_s_ratio"] = (
                onp["accepted_per_s"] / fixed["accepted_per_s"] if fixed["accepted_per_s"] > 0 else None
            )
        seeds = row.get("seeds", {})
        for seed, summary in seeds.items():
            for key, value in summary.items():
                out[f"{name} :: seed {seed} :: {key}"] = int(value) if isinstance(value, bool) else value
        if len(seeds) > 1:  # the worst seed: a goal holds "in every seed" when it holds for the minimum
            out[f"{name} :: over seeds :: count"] = len(seeds)
            out[f"{name} :: over seeds :: reached_beta_one"] = sum(s["reached_beta_one"] for s in seeds.values())
            reached = [s for s in seeds.values() if s["reached_beta_one"]]
            keys = ("rate_ratio", "accepted_per_s_ratio", "best_exact_rate_ratio", "exact_accepted_per_s_ratio")
            extra = ("rate", "joint_gof_p", "log_M", "flow_ess", "envelope_tv", "worst_envelope_tv", "wall_seconds")
            for key in (*keys, "gof_p", "first_exact_round", *extra):
                values = [s[key] for s in reached if s.get(key) is not None]
                if key in ("flow_ess", "wall_seconds"):  # judged whether or not β reached 1
                    values = [s[key] for s in seeds.values() if s.get(key) is not None]
                # None: no seed has a value (accepted/s against a fixed Gaussian that accepted nothing)
                out[f"{name} :: over seeds :: {key} :: min"] = min(values) if values else None
                out[f"{name} :: over seeds :: {key} :: max"] = max(values) if values else None
    return out


def publish(
    name: str, results: dict, printed: str, argv: list[str], results_root: Path, started: dict | None = None
) -> Path:
    files = import_closure([Path(__file__)])
    for row in results["targets"].values():
        files |= run_sources([f"experiment={row['experiment']}"])
    command = ["python", "-m", "benchmarks.onpolicy", *argv]
    title = f"On-policy benchmark: {name}"
    directory = results_root / name
    extra = {}
    if results.get("frontier"):
        directory.mkdir(parents=True, exist_ok=True)
        frontier_plot(results, directory / "frontier.png")
        image = f"![rate and ESS against d](results/{name}/frontier.png)"
        extra["table.md"] = f"# {title}\n\n{frontier_table(results)}\n\n{image}\n"
    return publish_report(
        directory, title, printed, results, figures(results), command, files, started, extra_files=extra
    )


def _frontier_subset(items: list[str], parser: argparse.ArgumentParser) -> dict[str, list[int]]:
    """``twisted:8,16 funnel:10`` -> {"twisted": [8, 16], "funnel": [10]}, each a cell of FRONTIER."""
    subset: dict[str, list[int]] = {}
    for item in items:
        name, _, dims = item.partition(":")
        try:
            wanted = [int(d) for d in dims.split(",")] if dims else list(FRONTIER.get(name, []))
        except ValueError:
            parser.error(f"--only {item!r}: write TARGET:D,D with integer dimensions, e.g. twisted:8,16")
        unknown = [d for d in wanted if d not in FRONTIER.get(name, [])]
        if name not in FRONTIER or unknown:
            cells = ", ".join(f"{n}:{','.join(map(str, ds))}" for n, ds in FRONTIER.items())
            parser.error(f"--only {item!r} is not a frontier cell; the frontier's cells are {cells}")
        subset.setdefault(name, []).extend(d for d in wanted if d not in subset.get(name, []))
    return subset


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.onpolicy", description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", choices=sorted(TARGETS), default=["twisted", "corners"])
    parser.add_argument("--dims", type=int, nargs="+", help="task.dim for every target (default: the experiment's)")
    parser.add_argument("--frontier", action="store_true", help="every (target, d) of FRONTIER (seeds 0 1 2)")
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run of the frontier pipeline")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="TARGET:D,D",
        help="with --frontier: only these cells, e.g. twisted:8,16 funnel:10 (the table names the rest as not run)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="on-policy runs, one per seed (the fixed proposals: the first)",
    )
    parser.add_argument(
        "--draws", type=int, default=None, help="proposal draws per scale for the envelope (1e6; --frontier: 2e5)"
    )
    parser.add_argument(
        "--fixed-proposals", type=int, default=None, help="proposals each fixed one is timed on (4e6; --frontier: 1e6)"
    )
    parser.add_argument(
        "--judge-draws", type=int, default=None, help="draws for the last round's ESS and envelope deficit (1e5)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="cells at a time, each in its own one-thread process")
    parser.add_argument("--cells-dir", default=None, help="keep finished cells here and reuse them")
    parser.add_argument("--publish", metavar="NAME", default=None, help="also write benchmarks/results/NAME/")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for the on-policy runs")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.only is not None:
        if not args.frontier:
            parser.error("--only restricts --frontier's cells: add --frontier")
        args.only = _frontier_subset(args.only, parser)
    quick = args.quick
    args.seeds = args.seeds or ([0, 1, 2] if args.frontier and not quick else [0])
    # the frontier's fixed proposals accept 1e-7 to 1e-300: fewer draws than the d = 8 benchmark's suffice
    args.draws = args.draws or (20_000 if quick else 200_000 if args.frontier else 1_000_000)
    args.fixed_proposals = args.fixed_proposals or (20_000 if quick else 1_000_000 if args.frontier else 4_000_000)
    args.judge_draws = args.judge_draws or (5_000 if quick else 100_000)
    if quick:
        args.overrides = QUICK_OVERRIDES + args.overrides
    return args


def main(argv: list[str] | None = None, results_root: Path = RESULTS_ROOT) -> dict:
    args = parse_args(argv)
    if not args.publish:
        return run(args)
    results, printed, started = run_and_capture(run, args)
    argv = list(argv if argv is not None else sys.argv[1:])
    publish(args.publish, results, printed, argv, results_root, started)
    return results


if __name__ == "__main__":
    main()
