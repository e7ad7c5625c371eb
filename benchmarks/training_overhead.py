"""Share of each training epoch spent rebuilding the accepted set, and what that time goes to.

    python -m benchmarks.training_overhead density_grid25 density_onpolicy credit_german --epochs 3

Each experiment runs in its own process (``train(cfg)`` as ``rsft-train`` would, logger off, no
plots) with :class:`RoundTimer` added as a callback. Per epoch it records the wall time between
consecutive epoch ends (sampling + training + validation + checkpoint), the time of the data module's
``train_dataloader`` (the rebuild: engine + annotation + loader), the engine's own ``sampling/seconds``
and, inside it, the time in ``proposal.sample`` and in ``acceptance.accept``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl


class RoundTimer(pl.Callback):
    """Times the accepted-set rebuild and each epoch; writes ``<path>`` (JSON lines) per epoch."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.rebuild: dict[int, float] = {}
        self.parts = {"proposal": 0.0, "acceptance": 0.0}
        self.last_end: float | None = None
        self.patched: list[tuple[type, str, object]] = []
        self.round_stats: dict = {}

    def _timed(self, cls: type, method: str, part: str) -> None:
        original = getattr(cls, method)
        parts = self.parts

        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                parts[part] += time.perf_counter() - start

        self.patched.append((cls, method, original))
        setattr(cls, method, wrapper)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm = trainer.datamodule
        # Class-level wrappers survive the engine's proposal.to(device) / acceptance.to(device) copies.
        self._timed(type(dm.proposal), "sample", "proposal")
        self._timed(type(dm.acceptance), "accept", "acceptance")
        original = dm.train_dataloader

        def timed_train_dataloader():
            start = time.perf_counter()
            try:
                return original()
            finally:
                if self.last_end is None:
                    self.last_end = start  # epoch 0 starts with its rebuild
                self.rebuild[trainer.current_epoch] = time.perf_counter() - start

        dm.train_dataloader = timed_train_dataloader

    def on_round(self, epoch: int, stats: dict, accepted: dict) -> None:
        self.round_stats = stats  # the data module tells its observers every round

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        now = time.perf_counter()
        epoch = trainer.current_epoch
        stats = self.round_stats
        row = {
            "epoch": epoch,
            "epoch_seconds": now - (self.last_end if self.last_end is not None else now),
            "rebuild_seconds": self.rebuild.get(epoch, float("nan")),
            "sampling_seconds": float(stats.get("seconds", float("nan"))),
            "proposal_seconds": self.parts["proposal"],
            "acceptance_seconds": self.parts["acceptance"],
            "proposals": float(stats.get("proposals_drawn", float("nan"))),
            "accepted": float(stats.get("accepted", float("nan"))),
        }
        self.parts.update(proposal=0.0, acceptance=0.0)
        self.last_end = now
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for cls, method, original in reversed(self.patched):
            setattr(cls, method, original)
        self.patched.clear()


def run_one(experiment: str, epochs: int, extra: list[str], run_dir: Path) -> list[dict]:
    """Train ``experiment`` for ``epochs`` epochs in this process; return the per-epoch rows."""
    from rsft.run.config import compose
    from rsft.train import train

    timings = run_dir / "round_timer.jsonl"
    cfg = compose(
        [
            f"experiment={experiment}",
            f"trainer.max_epochs={epochs}",
            "logger=none",
            "plot=false",
            f"paths.output_dir={run_dir}",
            "+callbacks.round_timer._target_=benchmarks.training_overhead.RoundTimer",
            f"+callbacks.round_timer.path={timings}",
            *extra,
        ]
    )
    train(cfg)
    return [json.loads(line) for line in timings.read_text().splitlines()]


def summarise(experiment: str, rows: list[dict]) -> dict:
    # Epoch 0 also pays one-off costs (first loader, lazy initialisation): the share excludes it
    # when there are later epochs.
    steady = rows[1:] if len(rows) > 1 else rows
    total = sum(r["epoch_seconds"] for r in steady)
    rebuild = sum(r["rebuild_seconds"] for r in steady)
    sampling = sum(r["sampling_seconds"] for r in steady)
    proposal = sum(r["proposal_seconds"] for r in steady)
    acceptance = sum(r["acceptance_seconds"] for r in steady)
    return {
        "experiment": experiment,
        "epochs_counted": len(steady),
        "epoch_seconds": total / len(steady),
        "rebuild_seconds": rebuild / len(steady),
        "rebuild_share": rebuild / total,
        "sampling_share_of_rebuild": sampling / rebuild if rebuild else float("nan"),
        "proposal_share_of_sampling": proposal / sampling if sampling else float("nan"),
        "acceptance_share_of_sampling": acceptance / sampling if sampling else float("nan"),
        "proposals_per_epoch": sum(r["proposals"] for r in steady) / len(steady),
        "accepted_per_epoch": sum(r["accepted"] for r in steady) / len(steady),
    }


def measure_in_subprocess(experiment: str, epochs: int, extra: list[str] = (), timeout: float = 1800) -> dict:
    env = {**os.environ, "WANDB_MODE": "disabled", "MPLBACKEND": "Agg"}
    cmd = [sys.executable, "-m", "benchmarks.training_overhead", experiment, "--epochs", str(epochs), "--json"]
    for item in extra:
        cmd += ["--override", item]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"training {experiment} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiments", nargs="+")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--override", action="append", default=[], help="extra Hydra override (repeatable)")
    parser.add_argument("--json", action="store_true", help="print one JSON summary line per experiment")
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "disabled")
    for experiment in args.experiments:
        with tempfile.TemporaryDirectory() as tmp:
            summary = summarise(experiment, run_one(experiment, args.epochs, args.override, Path(tmp)))
        print(json.dumps(summary) if args.json else summary, flush=True)


if __name__ == "__main__":
    main()
