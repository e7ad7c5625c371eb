"""What a run records about itself: its run dir (writable, atomic JSON files), ``run.json`` (which sweep it
belongs to), the checkpoint to resume from, and whether it already finished.

Every run writes ``<run dir>/run.json`` when it starts and updates it when it ends:

    {
      "name": "density_grid25",              # the experiment name (cfg.name)
      "run_dir": "/.../multiruns/<time>/proposal.scale=2,seed=0",
      "overrides": ["proposal.scale=2", "seed=0"],   # the command-line overrides of this job
      "mode": "multirun",                    # "run", "multirun", or "api" (train(cfg) called from Python)
      "sweep_dir": "/.../multiruns/<time>",  # null outside a multirun
      "job_num": 3, "job_id": "...",         # Hydra's job number in the sweep (null outside a multirun)
      "launcher": "hydra_plugins....LocalLauncher",  # null when unknown
      "host": "node-3", "pid": 12345,        # where the job ran (rank 0's process under multi-process training)
      "status": "running" | "finished",
      "started": "2026-...Z", "finished": "2026-...Z" | null
    }

Hydra's own ``.hydra/overrides.yaml`` holds the overrides too, but only when Hydra writes its output
subdir; ``run.json`` is always there and also says which sweep the run belongs to. ``rsft-compare``
reads it to key runs by the overrides that differ.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

RUN_RECORD = "run.json"

#: Keys that do not change what a run computes: a finished run with other values still counts as done.
NOT_RESULT_KEYS = ("resume", "skip_finished")


def flat_config(cfg: DictConfig | dict[str, Any], sep: str = ".") -> dict[str, Any]:
    """The whole resolved config as ``{"model.net.lr": 0.001, ...}`` (lists stay lists; None stays None)."""
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}{sep}{key}" if prefix else str(key))
        else:
            out[prefix] = node

    walk(container, "")
    return out


def hydra_job_info() -> dict[str, Any]:
    """Overrides, mode, sweep dir and job number of the current Hydra job (``mode: api`` without Hydra)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {"overrides": [], "mode": "api", "sweep_dir": None, "job_num": None, "job_id": None, "launcher": None}
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    launcher = hc.launcher.get("_target_") if hc.get("launcher") is not None else None
    return {
        "overrides": list(hc.overrides.task),
        "mode": "multirun" if multirun else "run",
        "sweep_dir": str(Path(hc.sweep.dir).resolve()) if multirun else None,
        "job_num": int(hc.job.num) if multirun and hc.job.get("num") is not None else None,
        "job_id": str(hc.job.id) if hc.job.get("id") is not None else None,
        "launcher": launcher if multirun else None,
    }


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically: a crash leaves the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, allow_nan=True) + "\n")
    os.replace(tmp, path)


def resolve_checkpoint(resume: str | None, run_dir: Path) -> str | None:
    """``resume=auto``: the run dir's last checkpoint if there is one; a path: that checkpoint."""
    if resume is None:
        return None
    if resume == "auto":
        last = run_dir / "checkpoints" / "last.ckpt"
        return str(last) if last.is_file() else None
    return str(resume)


def check_writable(run_dir: Path) -> None:
    """Fail before any work (and before touching earlier outputs) when the run dir cannot be written."""
    probe = run_dir / f".rsft_write_probe.{os.getpid()}"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise OSError(
            f"paths.output_dir={str(run_dir)!r} is not writable ({err.strerror or err}); "
            "choose another paths.output_dir (and hydra.run.dir) or free space there"
        ) from err


def start_record(run_dir: Path, name: str) -> dict[str, Any]:
    """Write ``run.json`` with status ``running``; returns the record."""
    record = {"name": name, "run_dir": str(Path(run_dir).resolve()), **hydra_job_info()}
    record.update(host=socket.gethostname(), pid=os.getpid())
    record.update(status="running", started=_now(), finished=None)
    write_json(Path(run_dir) / RUN_RECORD, record)
    return record


def finish_record(run_dir: Path, record: dict[str, Any]) -> None:
    """Mark ``run.json`` as finished."""
    record = {**record, "status": "finished", "finished": _now()}
    write_json(Path(run_dir) / RUN_RECORD, record)


def _result_config(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    flat = flat_config(cfg)
    return {k: v for k, v in flat.items() if k.split(".")[0] not in NOT_RESULT_KEYS}


def finished_metrics(run_dir: Path, cfg: DictConfig) -> dict[str, float] | None:
    """The metrics of a run that already finished in ``run_dir`` with the same config, else None.

    Finished means: ``metrics.json`` exists and the ``config.yaml`` beside it equals ``cfg`` (up to
    keys that do not change results, such as ``resume``). ``train`` removes a stale ``metrics.json``
    before it writes a new ``config.yaml``, so the two always belong to the same run.
    """
    run_dir = Path(run_dir)
    metrics_path, config_path = run_dir / "metrics.json", run_dir / "config.yaml"
    if not (metrics_path.is_file() and config_path.is_file()):
        return None
    previous = OmegaConf.load(config_path)
    if _result_config(previous) != _result_config(cfg):
        return None
    return json.loads(metrics_path.read_text())


#: Set when something other than Lightning started this process as one rank of a multi-process job.
EXTERNAL_LAUNCH_VARS = ("LOCAL_RANK", "SLURM_NTASKS", "TORCHELASTIC_RUN_ID")


def check_process_launch(trainer_cfg: DictConfig) -> None:
    """Refuse multi-process training where Lightning would have to re-run a command that is not ``rsft-train``.

    Lightning's DDP starts ranks 1..n-1 by re-running the command line. That is right for one
    ``rsft-train`` run, wrong inside a multirun (the re-run would launch the whole sweep again) and
    wrong from Python (it would re-run the caller's script).
    """
    devices, nodes = trainer_cfg.get("devices", 1), trainer_cfg.get("num_nodes", 1) or 1
    count = len(devices) if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices) else devices
    if not isinstance(count, int) or count * nodes <= 1 or "spawn" in str(trainer_cfg.get("strategy", "")):
        return
    if any(var in os.environ for var in EXTERNAL_LAUNCH_VARS):
        return
    mode = hydra_job_info()["mode"]
    if mode == "run":
        return
    where = "inside a multirun" if mode == "multirun" else "from Python (train(cfg))"
    raise ValueError(
        f"trainer.devices={devices} × trainer.num_nodes={nodes} {where}: Lightning starts the other ranks by "
        "re-running the command line, which only works for a single `rsft-train` run. Run multi-process jobs one "
        "at a time, sweep them with hydra/launcher=submitit_slurm (one task per device), or launch with torchrun"
    )
