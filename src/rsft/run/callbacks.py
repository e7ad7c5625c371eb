"""Lightning callbacks that record a run: per-epoch sampling stats and the epoch log file."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytorch_lightning as pl
import torch

log = logging.getLogger("rsft")


def _number(value: object) -> float | None:
    if torch.is_tensor(value):
        if value.numel() != 1:
            return None
        value = value.item()
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


def scalar_metrics(metrics: dict[str, object]) -> dict[str, float]:
    """Flat name → float for every scalar in ``metrics`` (tensors included)."""
    out = {}
    for key, value in metrics.items():
        number = _number(value)
        if number is not None:
            out[key] = number
    return out


class SamplingStatsLogger(pl.Callback):
    """Logs the data module's sampling figures of the epoch as ``sampling/<name>``."""

    LOGGED = (
        "proposals",
        "proposals_drawn",
        "accepted",
        "acceptance_rate",
        "seconds",
        "proposals_per_s",
        "accepted_per_s",
        "log_M",
        "envelope_violations",
        "envelope_raises",
        "thinned",
        "beta",  # tempered rules (TemperedDensityRatio): the round's β, and whether it drew p itself
        "exact_round",
    )

    def __init__(self) -> None:
        self.stats: dict[str, float] = {}  # of the round the data module sampled for this epoch

    def on_round(self, epoch: int, stats: dict[str, float], accepted: object) -> None:
        self.stats = stats

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        stats = self.stats
        values = {}
        for key, value in stats.items():
            number = _number(value)
            if number is None or key == "epoch":
                continue
            if key in self.LOGGED or key.startswith(("rule", "round_")):
                values[f"sampling/{key}"] = number
        # Rule figures such as max_log_ratio may be -inf before anything is seen: keep the log finite.
        values = {k: v for k, v in values.items() if math.isfinite(v)}
        if values:
            pl_module.log_dict(values, on_step=False, on_epoch=True, batch_size=1)
        if trainer.is_global_zero and "accepted" in stats:
            # The envelope figures only where the rule has an envelope (density ratios, DRS).
            envelope = (
                f", log M {stats['log_M']:.4g}, {int(stats.get('envelope_violations', 0))} envelope violations"
                if math.isfinite(stats.get("log_M", math.nan))
                else ""
            )
            if "beta" in stats:  # a tempered round: only β = 1 rounds are exact samples of the target
                envelope += f", beta {stats['beta']:.3g}" + (
                    "" if stats["beta"] == 1.0 else " (tempered, not exact for p)"
                )
            if stats.get("thinned", 0) > 0:  # rows dropped when an estimated envelope was raised (exactness)
                envelope += f", {int(stats['thinned'])} thinned after envelope raises"
            # Language-model rounds also report their generation speed.
            speed = f", {stats['round_tokens_per_s']:.1f} tokens/s" if "round_tokens_per_s" in stats else ""
            log.info(
                "epoch %d: accepted %d of %d proposals (rate %.4g)%s, %.2f s%s",
                trainer.current_epoch,
                stats["accepted"],
                stats.get("proposals", 0),
                stats.get("acceptance_rate", math.nan),
                envelope,
                stats.get("seconds", math.nan),
                speed,
            )


class EpochRecorder(pl.Callback):
    """Appends one JSON line per finished epoch to ``<run_dir>/epochs.jsonl``: every logged scalar, plus every
    figure of the epoch's sampling round as ``sampling/<name>`` (the logged ones and the rest).

    The row of an epoch is written before that epoch's checkpoint (Lightning runs checkpoint callbacks last),
    so a run's final metrics can always be read back from its last row (:func:`final_row`), also after a
    kill between the last checkpoint and ``metrics.json``. On resume the rows of epochs that will be re-run
    are dropped first, so the file always reads as one uninterrupted run.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.round: dict[str, float] = {}

    def on_round(self, epoch: int, stats: dict[str, float], accepted: object) -> None:
        self.round = {f"sampling/{key}": value for key, value in scalar_metrics(stats).items()}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # on_train_start runs after a checkpoint's training state is restored: current_epoch is the
        # first epoch this run will train.
        if not trainer.is_global_zero or not self.path.exists():
            return
        start = trainer.current_epoch
        rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        kept = [row for row in rows if row.get("epoch", -1) < start]
        if len(kept) != len(rows):
            self.path.write_text("".join(json.dumps(row) + "\n" for row in kept))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        # The round's figures exactly (the logged copies went through float32), and only this round's: Lightning
        # keeps a key logged in an earlier epoch in callback_metrics, so a figure this round did not report
        # (a pass-rate bin no group fell in) would otherwise show the earlier round's value.
        logged = {
            k: v for k, v in scalar_metrics(dict(trainer.callback_metrics)).items() if not k.startswith("sampling/")
        }
        row = {"epoch": trainer.current_epoch, **logged, **self.round}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        # The round's validation figures on the console too, so progress over epochs is visible live.
        validation = {k: v for k, v in row.items() if k.startswith("val/")}
        if validation:
            log.info(
                "epoch %d validation: %s",
                trainer.current_epoch,
                ", ".join(f"{k[4:]} {v:.4g}" for k, v in sorted(validation.items())),
            )


def final_row(path: str | Path) -> dict[str, float]:
    """The last row of an ``epochs.jsonl`` (without its ``epoch``): the figures a run ends with; {} when none."""
    path = Path(path)
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {key: value for key, value in rows[-1].items() if key != "epoch"} if rows else {}
