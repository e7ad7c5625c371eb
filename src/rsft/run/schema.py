"""Typed schemas of rsft's own config keys, checked on the composed config before a run does any work.

Each schema is a dataclass; the config's values are merged into ``OmegaConf.structured(schema)``, which
refuses a value of the wrong type with the key's path, and the error becomes one line that names the key and
the fix (``trainer.max_epochs='abc' is not an integer: set trainer.max_epochs to an integer``). Ranges that a
type cannot say (a seed numpy accepts, positive sizes) are checked next, the same way.

Open groups (the top level, ``model``, ``trainer``) are checked on the keys the schema lists; their other keys
belong to components that check them (a model's ``net``, Lightning's other Trainer arguments). Closed groups
(``sampler``) must hold only their schema's keys, and are built into their dataclass so that its
``__post_init__`` checks run up front too.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

#: numpy's and so Lightning's ``seed_everything`` range (a torch generator would take up to 2**64 - 1).
MAX_SEED = 2**32 - 1


# OmegaConf 2.3 reads ``Optional[X]``, not ``X | None``, in structured configs.
@dataclass
class RunSchema:
    """The top-level keys of conf/train.yaml."""

    name: str = "custom"
    seed: int = 0
    resume: Optional[str] = None  # noqa: UP045
    skip_finished: bool = False
    objective: Optional[str] = None  # noqa: UP045
    eval_before: bool = True
    plot: bool = True
    deterministic: bool = False
    threads: Optional[int] = 1  # noqa: UP045


@dataclass
class PretrainSchema:
    """``model.pretrain``: pre-training on the proposal before the first round."""

    steps: int = 0
    batch_size: int = 1
    lr: Optional[float] = None  # noqa: UP045
    lr_schedule: Optional[str] = None  # noqa: UP045


@dataclass
class ModelSchema:
    """The keys every ``model`` group option shares (``net`` is the model's own, checked by the model)."""

    batch_size: int = 1
    pretrain: PretrainSchema = field(default_factory=PretrainSchema)
    init_checkpoint: Optional[str] = None  # noqa: UP045
    save_pretrained: bool = False


@dataclass
class TrainerSchema:
    """The Lightning Trainer arguments rsft's conf/trainer and experiments set (the rest Lightning checks)."""

    max_epochs: Optional[int] = None  # noqa: UP045
    min_epochs: Optional[int] = None  # noqa: UP045
    max_steps: int = -1
    num_nodes: int = 1
    accelerator: str = "auto"
    log_every_n_steps: Optional[int] = None  # noqa: UP045
    check_val_every_n_epoch: Optional[int] = None  # noqa: UP045
    enable_progress_bar: Optional[bool] = None  # noqa: UP045
    enable_model_summary: Optional[bool] = None  # noqa: UP045
    accumulate_grad_batches: int = 1
    gradient_clip_val: Optional[float] = None  # noqa: UP045


#: Open groups: (path, schema). "" is the top level.
OPEN_GROUPS: tuple[tuple[str, type], ...] = (("", RunSchema), ("model", ModelSchema), ("trainer", TrainerSchema))

KINDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


class ConfigError(ValueError):
    """A config value of the wrong type or out of range; the message is one line naming the key and the fix."""


def validate_config(cfg: DictConfig, closed_groups: dict[str, type] | None = None) -> None:
    """Check ``cfg`` against rsft's schemas; raise :class:`ConfigError` naming the first bad key.

    ``closed_groups`` maps a group (e.g. ``"sampler"``) to the dataclass that must hold exactly its keys.
    """
    for path, schema in OPEN_GROUPS:
        node = OmegaConf.select(cfg, path) if path else cfg
        if isinstance(node, DictConfig):
            _merge(path, schema, _subset(path, node, schema))
    for path, schema in (closed_groups or {}).items():
        node = OmegaConf.select(cfg, path)
        if isinstance(node, DictConfig):
            merged = _merge(path, schema, _resolved(path, node))
            try:
                OmegaConf.to_object(merged)  # builds the dataclass: its __post_init__ checks run now
            except ValueError as err:
                raise ConfigError(f"{err}{_computed_from(path, node, str(err))}") from err
    _check_ranges(cfg)


def _computed_from(path: str, node: DictConfig, message: str) -> str:
    """Where a value named in ``message`` came from, when it is computed from other keys (an interpolation):
    those are the keys to fix."""
    for key in node:
        if f"{_join(path, str(key))}" in message and OmegaConf.is_interpolation(node, str(key)):
            source = OmegaConf.to_container(node)[key]
            return f"; {_join(path, str(key))} is computed as {source}: fix the keys it reads"
    return ""


def _check_ranges(cfg: DictConfig) -> None:
    seed = cfg.get("seed")
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed={seed} is out of range: set seed to an integer in [0, {MAX_SEED}]")
    threads = cfg.get("threads")
    if threads is not None and threads <= 0:
        raise ConfigError(f"threads={threads} must be positive: set threads to a positive integer or null")
    model = cfg.get("model")
    if isinstance(model, DictConfig):
        _at_least(model, "batch_size", 1, "model.batch_size")
        if isinstance(model.get("pretrain"), DictConfig):
            _at_least(model.pretrain, "steps", 0, "model.pretrain.steps")
            _at_least(model.pretrain, "batch_size", 1, "model.pretrain.batch_size")
    trainer = cfg.get("trainer")
    if isinstance(trainer, DictConfig):
        if trainer.get("max_epochs") is not None and trainer.max_epochs < -1:
            raise ConfigError(
                f"trainer.max_epochs={trainer.max_epochs} must be a non-negative integer or -1 (no limit): "
                "set trainer.max_epochs to the number of rounds"
            )
        _check_devices(trainer)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _check_devices(trainer: DictConfig) -> None:
    """``trainer.devices`` and ``trainer.accelerator`` as Lightning reads them (checked here, before any write,
    instead of in Lightning's Trainer once the run has started)."""
    from pytorch_lightning.accelerators import AcceleratorRegistry

    accelerator = trainer.get("accelerator", "auto")
    known = ["auto", "gpu", *AcceleratorRegistry.available_accelerators()]
    if isinstance(accelerator, str) and accelerator not in known:
        raise ConfigError(f"trainer.accelerator={accelerator!r} is not an accelerator: set it to one of {known}")
    if "devices" not in trainer:
        return
    devices = OmegaConf.to_container(trainer.devices) if OmegaConf.is_config(trainer.devices) else trainer.devices
    if isinstance(devices, str) and devices.strip() not in ("auto", "-1"):
        parts = [p.strip() for p in devices.split(",") if p.strip()]
        devices = [int(p) for p in parts] if parts and all(p.isdigit() for p in parts) else devices
    ok = (
        devices in ("auto", "-1", -1)
        or (isinstance(devices, int) and not isinstance(devices, bool) and devices > 0)
        or (isinstance(devices, list) and devices and all(isinstance(d, int) and d >= 0 for d in devices))
    )
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not _cuda_available())
    if ok and isinstance(devices, list) and on_cpu:
        raise ConfigError(
            f"trainer.devices={devices!r} lists device indices, which only GPUs have: on CPU set trainer.devices "
            "to a number of processes (e.g. trainer=ddp_cpu for 2)"
        )
    if not ok:
        raise ConfigError(
            f"trainer.devices={devices!r} is not a device count: set trainer.devices to a positive integer, -1 (all), "
            "'auto', or a list of device indices such as [0, 1]"
        )


def _at_least(node: DictConfig, key: str, low: int, path: str) -> None:
    value = node.get(key)
    if value is not None and value < low:
        what = "positive" if low == 1 else f"≥ {low}"
        raise ConfigError(f"{path} must be {what}, got {value}; set {path} to an integer ≥ {low}")


def _subset(path: str, node: DictConfig, schema: type) -> dict[str, Any]:
    """The schema's keys present in ``node``, resolved (nested schemas recursively)."""
    hints = typing.get_type_hints(schema)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(schema):
        if f.name not in node:
            continue
        key = _join(path, f.name)
        if dataclasses.is_dataclass(hints[f.name]) and isinstance(node[f.name], DictConfig):
            out[f.name] = _subset(key, node[f.name], hints[f.name])
        else:
            out[f.name] = _resolved(key, node, f.name)
    return out


def _resolved(path: str, node: DictConfig, key: str | None = None) -> Any:
    try:
        if key is None:
            return OmegaConf.to_container(node, resolve=True)
        value = node[key]
        return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    except OmegaConfBaseException as err:
        where = _join(path, err.full_key or key or "")
        raise ConfigError(f"{where} cannot be resolved ({_first_line(err)}); fix its interpolation") from err


def _merge(path: str, schema: type, values: dict[str, Any]) -> DictConfig:
    try:
        return OmegaConf.merge(OmegaConf.structured(schema), values)
    except OmegaConfBaseException as err:
        key = err.full_key or ""
        where = _join(path, key)
        if isinstance(err, ConfigKeyError):
            keys = ", ".join(f.name for f in dataclasses.fields(schema))
            raise ConfigError(f"{where} is not a key of {path}: remove it (the keys are {keys})") from err
        kind = _kind(schema, key)
        raise ConfigError(f"{where}={err.value!r} is not {kind}: set {where} to {kind}") from err


def _kind(schema: type, dotted: str) -> str:
    """'an integer', 'a number or null', ... for the field at ``dotted`` in ``schema``."""
    hint: Any = schema
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(hint) or part not in typing.get_type_hints(hint):
            return "the type its default has"
        hint = typing.get_type_hints(hint)[part]
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    kind = KINDS.get(base, "the type its default has")
    return f"{kind} or null" if optional else kind


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path and key else path or key


def _first_line(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__
