"""``hydra/launcher=ray``: every job of a sweep is one Ray task, on a Ray cluster or a local Ray instance.

rsft ships its own launcher because the Hydra plugin as released (hydra-ray-launcher 1.2.2) does not work
with Ray 2.60 on a running cluster: it always passes ``object_store_memory`` to ``ray.init``, which Ray
refuses when it connects to an existing cluster ("When connecting to an existing cluster,
object_store_memory must not be provided"; ``+hydra.launcher.ray.init.object_store_memory=null`` gets
around it), and its ``cloudpickle<3`` pin conflicts with joblib >= 1.6, which requires ``cloudpickle>=3``
(joblib comes with scikit-learn through the fairness extra). It also pulls ``ray[default]`` and boto3
for its AWS launcher. The config keeps the plugin's shape (``ray.init``: keyword
arguments of ``ray.init``, ``ray.remote``: task options), so Hydra also accepts it where that plugin is
installed.

What differs from running the jobs one after another in this process:

- each job runs in a Ray worker process on whichever node has the CPUs (GPUs) its ``ray.remote`` options
  ask for; ``max_calls: 1`` (the default in ``conf/hydra/launcher/ray.yaml``) gives every job a fresh
  process, so nothing a job leaves in its process (threads, CUDA memory, loggers) reaches the next one;
- the nodes must see the sweep dir at the same path (a shared file system on a real cluster), and have
  rsft and its dependencies installed (``pip install -e '.[ray]'``);
- ``hydra.job.id`` is the Ray task id; ``hydra.job.num`` is the job's number in the sweep, as everywhere.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


def _plain(node: Any, key: str) -> dict[str, Any]:
    """A ``ray.init`` / ``ray.remote`` block as a plain dict (None: empty)."""
    if node is None:
        return {}
    value = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    if not isinstance(value, dict):
        raise ValueError(f"hydra.launcher.ray.{key}={value!r} must be a mapping of Ray options, e.g. {{num_cpus: 1}}")
    return dict(value)


def _run_sweep_job(
    hydra_context: HydraContext, config: DictConfig, task_function: TaskFunction, singletons: dict[Any, Any]
) -> JobReturn:
    """Runs inside a Ray worker: restore Hydra's state as the driver had it, then run one job."""
    import ray

    setup_globals()
    Singleton.set_state(singletons)
    with open_dict(config):
        config.hydra.job.id = ray.get_runtime_context().get_task_id()
    HydraConfig.instance().set_config(config)
    return run_job(
        hydra_context=hydra_context,
        task_function=task_function,
        config=config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )


#: Seconds to wait for the head node's port before giving up (ray.init itself retries for minutes).
CONNECT_TIMEOUT_S = 10.0


def check_reachable(address: str | None) -> None:
    """Fail at once, naming the key, when nothing listens at a ``host:port`` address."""
    if address is None or address == "auto" or "://" in address or ":" not in address:
        return  # a local instance, Ray's own discovery, or a Ray Client URL: left to ray.init
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except (OSError, ValueError) as err:
        raise ConnectionError(
            f"hydra.launcher.ray.init.address={address!r}: no Ray head node answers there ({err}); start one with "
            "`ray start --head --port=PORT` and pass HOST:PORT, or set address=null for a Ray instance of this sweep"
        ) from err


class RayLauncher(Launcher):
    """Submits each sweep job as a Ray task (``ray.remote``) and waits for all of them."""

    def __init__(self, ray: DictConfig | dict[str, Any]) -> None:
        try:  # imported only when the launcher is used: Hydra imports this module on every start
            import ray as ray_api
        except ModuleNotFoundError as err:
            raise ModuleNotFoundError("hydra/launcher=ray needs Ray: pip install -e '.[ray]'") from err

        self.init_options = _plain(ray.get("init"), "init")
        self.task_options = _plain(ray.get("remote"), "remote")
        try:  # Ray checks the options here: a bad one fails before the sweep connects or runs anything
            self.task = ray_api.remote(**self.task_options)(_run_sweep_job)
        except (TypeError, ValueError) as err:
            raise ValueError(f"hydra.launcher.ray.remote={self.task_options}: {err}") from err
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self.config: DictConfig | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import ray

        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)

        connected_here = not ray.is_initialized()
        if connected_here:
            self._connect(ray)
        try:
            log.info("Ray launcher: %d job(s) on %s; sweep dir %s", len(job_overrides), self._where(), sweep_dir)
            pending = []
            for num, overrides in enumerate(job_overrides, start=initial_job_idx):
                log.info("\t#%d : %s", num, " ".join(filter_overrides(overrides)))
                config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
                with open_dict(config):
                    config.hydra.job.num = num
                pending.append(self.task.remote(self.hydra_context, config, self.task_function, Singleton.get_state()))
            return ray.get(pending)
        finally:
            if connected_here:
                ray.shutdown()  # the driver leaves; a cluster started with `ray start` keeps running

    def _connect(self, ray: Any) -> None:
        address = self.init_options.get("address")
        check_reachable(address)
        try:
            ray.init(**self.init_options)
        except (TypeError, ValueError) as err:
            raise ValueError(f"hydra.launcher.ray.init={self.init_options}: {err}") from err

    def _where(self) -> str:
        address = self.init_options.get("address")
        return "a local Ray instance" if address is None else f"the Ray cluster at {address}"
