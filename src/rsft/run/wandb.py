"""The Weights & Biases logger of a run (``logger=wandb`` or ``logger=both``).

Batch runs must never stop to ask for a login or wait on a network that is not there, so the mode is
decided before W&B starts: ``mode`` from the config if given, else ``$WANDB_MODE``, else ``online``
only when an API key is configured (``$WANDB_API_KEY`` or a netrc entry for the W&B host) and
``offline`` otherwise. Offline runs are uploaded later with ``wandb sync <run dir>/wandb/offline-run-*``.

Everything W&B writes for a run stays in the run dir (``<run dir>/wandb/``). The W&B run id is kept in
``<run dir>/wandb/rsft_run_id`` so that ``resume=auto`` continues the same W&B run. Runs of one
multirun share a group (``<name>-<sweep dir name>``; a single run's group is its experiment name)
and carry the job's overrides as tags.
"""

from __future__ import annotations

import netrc
import os
import secrets
import string
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from rsft.run.records import hydra_job_info, resolve_checkpoint

MODES = ("online", "offline", "disabled")
RUN_ID_FILE = "rsft_run_id"
MAX_TAG_LENGTH = 64  # W&B rejects longer tags


def api_key_configured() -> bool:
    """Whether W&B could log in without asking: ``$WANDB_API_KEY`` or a netrc entry for its host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        entry = netrc.netrc(str(path)).authenticators(host) if path.is_file() else None
    except (netrc.NetrcParseError, OSError):
        return False
    return bool(entry and entry[2])


def decide_mode(requested: str | None = None) -> str:
    """``online``, ``offline`` or ``disabled``: the config, else ``$WANDB_MODE``, else by API key."""
    if requested is not None:
        if requested not in MODES:
            raise ValueError(f"logger.wandb.mode must be one of {', '.join(MODES)} or null, got {requested!r}")
        return requested
    env = os.environ.get("WANDB_MODE")
    if env:
        return "offline" if env == "dryrun" else env
    if os.environ.get("WANDB_DISABLED", "").lower() in ("1", "true", "yes"):
        return "disabled"
    return "online" if api_key_configured() else "offline"


def run_group(name: str, info: dict[str, Any]) -> str:
    """The experiment name; in a multirun also the sweep dir's name, so each sweep is one group."""
    if info.get("sweep_dir"):
        return f"{name}-{Path(info['sweep_dir']).name}"
    return name


def override_tags(overrides: list[str], extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Tags from ``key=value`` overrides (W&B caps a tag at 64 characters), without duplicates."""
    tags: list[str] = []
    for tag in [*extra, *overrides]:
        tag = str(tag)[:MAX_TAG_LENGTH]
        if tag and tag not in tags:
            tags.append(tag)
    return tags


def _is_resuming(resume: str | None, run_dir: Path) -> bool:
    return resolve_checkpoint(resume, run_dir) is not None


def stable_run_id(run_dir: Path, resuming: bool) -> str:
    """The W&B id stored in the run dir when training resumes; otherwise a fresh one (stored)."""
    path = run_dir / "wandb" / RUN_ID_FILE
    if resuming and path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))  # W&B's id form
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n")
    return run_id


class WandbUnavailable(Logger):
    """Stands in for a W&B logger that could not start: logs nothing (the run's local logs hold everything)."""

    @property
    def name(self) -> str:
        return "wandb_unavailable"

    @property
    def version(self) -> str:
        return "0"

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass


def wandb_logger(
    run_dir: str | Path,
    experiment_name: str,
    project: str = "rsft",
    entity: str | None = None,
    name: str | None = None,
    group: str | None = None,
    tags: list[str] | tuple[str, ...] = (),
    mode: str | None = None,
    job_type: str = "train",
    resume: str | None = None,
    console: str = "off",
    init_timeout: float = 90.0,
) -> WandbLogger | WandbUnavailable:
    """A Lightning ``WandbLogger`` whose files, id and mode follow the rules in the module docstring.

    If W&B cannot start, a warning and a no-op logger instead: W&B must never be why a run fails.
    """
    import wandb

    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    info = hydra_job_info()
    chosen = decide_mode(mode)
    run_id = stable_run_id(run_dir, _is_resuming(resume, run_dir))
    logger = WandbLogger(
        save_dir=str(run_dir),  # W&B writes <run dir>/wandb/..., never into the current directory
        project=project,
        entity=entity,
        name=name or f"{experiment_name}/{run_dir.name}",
        id=run_id,
        group=group or run_group(experiment_name, info),
        tags=override_tags(info["overrides"], tags),
        job_type=job_type,
        mode=chosen,
        log_model=False,
        # init_timeout bounds how long an online start may wait on an unreachable server.
        settings=wandb.Settings(silent=True, console=console, init_timeout=init_timeout),
    )
    try:
        logger.experiment  # start W&B now (rank 0 only): if it cannot start, the run goes on without it
    except Exception as err:  # noqa: BLE001 - any W&B failure (network, disk, service) must not kill a run
        warnings.warn(
            f"W&B failed to start ({type(err).__name__}: {' '.join(str(err).split())}); the run continues "
            f"without W&B, with its local logs (epochs.jsonl, metrics.json, csv/ with logger=both) in {run_dir}",
            RuntimeWarning,
            stacklevel=2,
        )
        return WandbUnavailable()
    return logger


@rank_zero_only
def finish_wandb(loggers: list[Logger], summary: dict[str, float] | None = None, exit_code: int = 0) -> None:
    """Put the final metrics into each W&B run's summary and close it (the next multirun job starts a new run)."""
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            try:
                run = lg.experiment
                if summary:
                    run.summary.update(summary)
                run.finish(exit_code=exit_code)
            except Exception as err:  # noqa: BLE001 - the local metrics are written already; W&B must not fail the run
                warnings.warn(
                    f"W&B failed to finish its run ({type(err).__name__}: {err}); local logs are complete",
                    RuntimeWarning,
                    stacklevel=2,
                )
