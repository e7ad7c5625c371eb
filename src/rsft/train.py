"""``rsft-train``: compose proposal × acceptance × model × task with Hydra and fine-tune.

``train(cfg)`` does the work and is what tests call; ``main`` is the Hydra command-line entry.
Everything a run writes goes to its run directory (``paths.output_dir``):

    config.yaml         the resolved config           epochs.jsonl   one row of figures per epoch
    metrics.json        final metrics (flat)          checkpoints/   last.ckpt (for resume=auto)
    before.json         metrics before fine-tuning    accepted/      accepted batches (save_accepted)
    plots/run.png       accepted samples and model    csv/, wandb/   logger files
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from rsft.data import RejectionSamplingDataModule
from rsft.models.checkpoint import load_weights_only
from rsft.run.build import build
from rsft.run.callbacks import EpochRecorder, SamplingStatsLogger, final_row, scalar_metrics
from rsft.run.config import conf_dir, register_resolvers
from rsft.run.console import quiet_library_notices
from rsft.run.records import (
    check_process_launch,
    check_writable,
    finish_record,
    finished_metrics,
    flat_config,
    resolve_checkpoint,
    start_record,
    write_json,
)
from rsft.run.schema import validate_config
from rsft.run.wandb import finish_wandb
from rsft.sampling import SamplerSettings
from rsft.tasks.plotting import plot_acceptance

log = logging.getLogger("rsft")

REQUIRED_TOP_LEVEL = ("seed", "proposal", "acceptance", "model", "task", "sampler", "trainer", "paths")


def train(cfg: DictConfig) -> float | None:
    """Run one experiment; return ``metrics[cfg.objective]`` (for sweepers) or None.

    Everything that can be checked is checked before the run dir is touched: the typed config, the checkpoint
    to resume from, and every component, built from the config (the task once, handed to the others). Only
    then are ``config.yaml`` and ``run.json`` written.
    """
    started = time.perf_counter()
    quiet_library_notices()
    check_config(cfg)  # the whole config, typed, before any work: one line naming the key on any error
    run_dir = Path(cfg.paths.output_dir)
    ckpt_path, checkpoint = _checked_resume(cfg, run_dir)
    done = _finished_run(cfg, run_dir)
    if done is not None:  # a relaunched sweep job, or resume of a run that already finished: nothing to do
        return _objective(cfg, done)
    _prepare_process(cfg)
    parts = build_components(cfg)
    if checkpoint is not None:  # what the model keeps beside its weights, checked before anything is written
        parts.model.check_checkpoint(checkpoint, f"resume={cfg.resume!r}: the checkpoint {ckpt_path!r}")
    _write_run_dir(cfg, run_dir)
    if rank_zero_only.rank == 0:
        for name, content in parts.task.records().items():  # what the task inferred from the user's data
            write_json(run_dir / name, content)
    record = start_record(run_dir, str(cfg.get("name", ""))) if rank_zero_only.rank == 0 else None

    model = parts.model
    callbacks = [*parts.callbacks, *_record_callbacks(run_dir)]
    datamodule = RejectionSamplingDataModule(
        parts.proposal,
        parts.acceptance,
        parts.task,
        sampler=OmegaConf.to_container(cfg.sampler, resolve=True),
        batch_size=cfg.model.batch_size,
        seed=cfg.seed,
        run_dir=run_dir,
        observers=[c for c in (*callbacks, model) if hasattr(c, "on_round")],  # told of every round
    )
    before_path = run_dir / "before.json"
    if ckpt_path is None:
        before_path.unlink(missing_ok=True)
        _initial_weights(cfg, model, parts.proposal, parts.task, run_dir)
    else:
        log.info("resuming from %s", ckpt_path)

    loggers = _instantiate_all(cfg.get("logger"))
    for lg in loggers:
        lg.log_hyperparams(flat_config(cfg))  # all of it, not a hand-picked subset
    trainer = _make_trainer(cfg, run_dir, loggers, callbacks)
    if ckpt_path is None and cfg.get("eval_before", True):
        results = trainer.validate(model, datamodule=datamodule, verbose=False)
        if trainer.is_global_zero:
            write_json(before_path, {f"before/{k}": v for r in results for k, v in scalar_metrics(r).items()})
    with _out_of_space_is_clear(run_dir):
        # weights_only=True explicitly: Lightning leaves it to torch's default, which the environment can turn off.
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        metrics = _final_metrics(trainer, run_dir, started)
        if trainer.is_global_zero:
            _report(cfg, run_dir, metrics, parts.task, datamodule, model, loggers, record)
    return _objective(cfg, metrics)


@dataclass
class Components:
    """What a run is made of, built from its config: the task once, and everything that uses it."""

    task: Any
    proposal: Any
    acceptance: Any
    model: Any
    callbacks: list[Any]


def build_components(cfg: DictConfig) -> Components:
    """Build the task, then the proposal, the acceptance rule, the model and the extra callbacks, handing each
    the one task (config slots ``"@task"``, ``"@task.<attribute>"``, and ``"@proposal.<attribute>"`` for the
    rule and what comes after it). Every error names its config key; nothing has been written yet."""
    task = build(cfg.task, "task")
    proposal = build(cfg.proposal, "proposal", {"task": task})
    provided = {"task": task, "proposal": proposal}
    acceptance = build(cfg.acceptance, "acceptance", provided)
    model = build(cfg.model.net, "model.net", provided)
    callbacks = [
        build(node, f"callbacks.{name}", provided)
        for name, node in (cfg.get("callbacks") or {}).items()
        if node is not None and "_target_" in node
    ]
    return Components(task, proposal, acceptance, model, callbacks)


#: A write that failed because the disk, a quota or a file-size limit is full.
OUT_OF_SPACE = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


@contextmanager
def _out_of_space_is_clear(run_dir: Path) -> Iterator[None]:
    """A full disk mid-run: say so, and how to continue. Checkpoints and JSON files are written atomically,
    so the last complete checkpoint is still there for resume=auto."""
    try:
        yield
    except OSError as err:
        if err.errno not in OUT_OF_SPACE:
            raise
        where = f" writing {err.filename}" if err.filename else ""
        raise OSError(
            err.errno,
            f"paths.output_dir={str(run_dir)!r} ran out of space ({err.strerror}){where}; earlier outputs and the "
            "last complete checkpoint are kept: free space (or raise the file-size limit), then resume=auto",
        ) from err


def check_config(cfg: DictConfig) -> None:
    """Reject settings that would otherwise fail late or silently: missing groups, values of the wrong type or
    out of range (rsft.run.schema), a resume checkpoint that does not exist."""
    missing = [key for key in REQUIRED_TOP_LEVEL if key not in cfg]
    if missing:
        raise ValueError(f"the config has no {', '.join(missing)}: compose it from conf/train.yaml")
    validate_config(cfg, closed_groups={"sampler": SamplerSettings})
    resume = cfg.get("resume")
    if resume is not None and resume != "auto" and not Path(str(resume)).is_file():
        raise FileNotFoundError(f"resume={resume!r}: no such checkpoint file; pass resume=auto or a .ckpt path")


def _checked_resume(cfg: DictConfig, run_dir: Path) -> tuple[str | None, dict[str, Any] | None]:
    """The checkpoint to resume from and its contents, read once as weights only before anything else is done, so
    that a file holding more than weights is refused before the run dir is touched."""
    resume = cfg.get("resume")
    ckpt_path = resolve_checkpoint(resume, run_dir)
    if ckpt_path is None:
        return None, None
    return ckpt_path, load_weights_only(ckpt_path, f"resume={resume!r}: the checkpoint {ckpt_path!r}")


class FinishedRunError(FileExistsError):
    """The run dir holds a finished run that this call would overwrite."""


def _finished_run(cfg: DictConfig, run_dir: Path) -> dict[str, float] | None:
    """What to do with a run that already finished in ``run_dir``: a plain run refuses to overwrite it;
    ``resume`` or ``skip_finished=true`` with the same config returns its metrics unchanged (None: go on — no
    finished run, or ``resume`` continuing it under another config such as more epochs, or ``skip_finished``
    re-running a job whose config changed)."""
    if not (run_dir / "metrics.json").is_file():
        return None
    same = finished_metrics(run_dir, cfg)  # None when its config.yaml differs from this config
    resume, skip = cfg.get("resume"), bool(cfg.get("skip_finished", False))
    if same is not None and (resume is not None or skip):
        how = f"resume={resume}" if resume is not None else "skip_finished=true"
        log.info("%s: %s already finished with this config, not re-running (its metrics are unchanged)", how, run_dir)
        return same
    if resume is not None or skip:
        return None
    raise FinishedRunError(
        f"paths.output_dir={str(run_dir)!r} holds a finished run (metrics.json): rsft does not overwrite it. Choose "
        "a new run dir (hydra.run.dir=...), add resume=auto to report it (or to continue it, e.g. with more epochs), "
        "or delete the directory to run it again"
    )


def _prepare_process(cfg: DictConfig) -> None:
    """Threads, seeds and determinism, before any component is built (model initialisation draws from them)."""
    check_process_launch(cfg.trainer)
    threads = cfg.get("threads")
    if threads is not None:  # a positive integer: checked by check_config
        torch.set_num_threads(threads)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.use_deterministic_algorithms(bool(cfg.get("deterministic", False)), warn_only=True)


def _write_run_dir(cfg: DictConfig, run_dir: Path) -> None:
    """The first writes of a run: a writable run dir and its ``config.yaml`` (no stale metrics beside it)."""
    check_writable(run_dir)
    if rank_zero_only.rank == 0:  # the other ranks of a multi-process run re-enter train() too
        (run_dir / "metrics.json").unlink(missing_ok=True)  # stale metrics must not outlive their config
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))


def _initial_weights(cfg: DictConfig, model: Any, proposal: Any, task: Any, run_dir: Path) -> None:
    """A fresh run starts from ``model.init_checkpoint``, or pre-trains on the proposal's pre-training source."""
    if cfg.model.get("init_checkpoint"):
        model.load_initial_weights(cfg.model.init_checkpoint)
        return
    if cfg.model.pretrain.steps <= 0:
        return
    source = proposal.pretraining_source(model)
    generator = torch.Generator().manual_seed(cfg.seed + 7919)
    schedule = {
        key: cfg.model.pretrain[key] for key in ("lr", "lr_schedule") if cfg.model.pretrain.get(key) is not None
    }
    losses = model.pretrain(
        lambda n, g: task.annotate(source.sample(n, g)),
        cfg.model.pretrain.steps,
        cfg.model.pretrain.batch_size,
        generator,
        **schedule,
    )
    log.info("pre-trained %d steps on the proposal: loss %.4f -> %.4f", len(losses), losses[0], losses[-1])
    if cfg.model.get("save_pretrained", False):  # so other runs can start here (model.init_checkpoint)
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), run_dir / "checkpoints" / "pretrained.pt")


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    if not group:
        return []
    return [hydra.utils.instantiate(node) for node in group.values() if node is not None and "_target_" in node]


def _record_callbacks(run_dir: Path) -> list[pl.Callback]:
    """rsft's own callbacks: the round's figures logged, ``epochs.jsonl``, and the checkpoints for resume."""
    return [
        SamplingStatsLogger(),
        EpochRecorder(run_dir / "epochs.jsonl"),
        # save_top_k=1 without a monitor keeps the newest epoch; Lightning writes last.ckpt only on
        # epochs where it saved a checkpoint, so save_top_k=0 would leave a killed run nothing to resume.
        pl.callbacks.ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True, save_top_k=1, every_n_epochs=1),
    ]


def _make_trainer(cfg: DictConfig, run_dir: Path, loggers: list[Any], callbacks: list[Any]) -> pl.Trainer:
    return hydra.utils.instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        default_root_dir=str(run_dir),
        reload_dataloaders_every_n_epochs=1,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # each rank samples its own share
    )


def _final_metrics(trainer: pl.Trainer, run_dir: Path, started: float) -> dict[str, float]:
    """The run's final figures, read back from what it recorded: ``before.json`` and the last row of
    ``epochs.jsonl`` (every logged scalar and the last round's sampling figures). A run resumed after its
    last checkpoint (killed before ``metrics.json``) therefore ends with the figures of an uninterrupted one."""
    metrics: dict[str, float] = {}
    before_path = run_dir / "before.json"
    if before_path.is_file():
        metrics.update(json.loads(before_path.read_text()))
    metrics.update(final_row(run_dir / "epochs.jsonl"))
    metrics["epochs"] = float(trainer.current_epoch)
    metrics["wall_seconds"] = time.perf_counter() - started
    return metrics


def _report(
    cfg: DictConfig,
    run_dir: Path,
    metrics: dict[str, float],
    task: Any,
    datamodule: RejectionSamplingDataModule,
    model: Any,
    loggers: list[Any],
    record: dict[str, Any] | None,
) -> None:
    """Rank 0 only: metrics.json, the plot, the W&B summary, the run record, the console summary."""
    write_json(run_dir / "metrics.json", metrics)
    if cfg.get("plot", True):
        plot = task.plot(run_dir / "plots" / "run.png", datamodule.last_accepted, model)
        _plot_tempered_rounds(run_dir)
        if plot is not None:
            for lg in loggers:
                if hasattr(lg, "log_image"):
                    lg.log_image(key="run_plot", images=[str(plot)])
    finish_wandb(loggers, metrics)
    if record is not None:
        finish_record(run_dir, record)
    _print_summary(metrics, run_dir)


def _plot_tempered_rounds(run_dir: Path) -> None:
    """plots/acceptance.png for a run whose rounds are tempered (a rule that reports ``beta``)."""
    path = run_dir / "epochs.jsonl"
    if not path.exists():
        return
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if any("sampling/beta" in row for row in rows):
        plot_acceptance(run_dir / "plots" / "acceptance.png", rows)


def _objective(cfg: DictConfig, metrics: dict[str, float]) -> float | None:
    objective = cfg.get("objective")
    if objective:
        if objective not in metrics:
            raise KeyError(f"objective={objective!r} is not among the run's metrics: {sorted(metrics)}")
        return metrics[objective]
    return None


def _print_summary(metrics: dict[str, float], run_dir: Path) -> None:
    rows = [
        (k, v)
        for k, v in sorted(metrics.items())
        if k.startswith(("before/", "val/", "test/"))
        or k in ("sampling/acceptance_rate", "sampling/log_M", "sampling/envelope_violations", "wall_seconds")
    ]
    width = max((len(k) for k, _ in rows), default=10)

    def fmt(v: object) -> str:
        return f"{v:.4g}" if isinstance(v, float) and math.isfinite(v) else str(v)

    # A metric measured before fine-tuning too is printed once, as "before -> after".
    after = {k for k, _ in rows if f"before/{k}" in metrics}
    lines = [
        f"  {k:<{width}}  {fmt(metrics[f'before/{k}'])} -> {fmt(v)}" if k in after else f"  {k:<{width}}  {fmt(v)}"
        for k, v in rows
        if not (k.startswith("before/") and k[len("before/") :] in after)
    ]
    print(f"rsft: finished; run dir {run_dir}\n" + "\n".join(lines), flush=True)


def _one_line(err: BaseException) -> str:
    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}"


def _entry(cfg: DictConfig) -> float | None:
    try:
        return train(cfg)
    except Exception as err:  # noqa: BLE001 - turn any failure into one readable line at the CLI
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(
            f"rsft-train: error: {_one_line(err)}\n(set HYDRA_FULL_ERROR=1 for the full trace)",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(1) from None


def main() -> None:
    """Console entry point (``rsft-train``)."""
    register_resolvers()
    # rsft's launcher files share the plugins' names on purpose; Hydra validates them against the plugins' schemas.
    warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/\w+' is validated against ConfigStore schema")
    hydra.main(config_path=str(conf_dir()), config_name="train", version_base="1.3")(_entry)()


if __name__ == "__main__":
    main()
