"""Build a run's components from their config nodes, the task once, and hand it to those that ask for it.

A config node with ``_target_`` names a class or function; its other keys are the arguments. A value
``"@task"`` marks a *slot*: the component receives the run's task object itself, built once in
``train()`` (``"@task.data"``: the task's ``data`` attribute, ``"@proposal.defensive"``: the built
proposal's). So the proposal, the acceptance rule, the model and the callbacks share the one task the data
module holds, instead of each interpolating the task's config node and building a copy of its data::

    # conf/acceptance/reweighing.yaml
    _target_: rsft.acceptance.fairness.Reweighing
    data: "@task.data"

Before anything is called, every plain value is checked against the annotated type of the parameter it
goes to (``lr: float`` refuses ``'abc'``), and every key against the parameters the target takes, so a bad
value ends in one line naming the config key, what it must be and the fix, before the run directory is
touched. Hydra's ``instantiate`` is not used for these nodes because it turns objects handed in (a task's
dataclass split, for one) back into config nodes; the rest of Hydra's instantiation rules are not needed by
rsft's configs (``_args_`` and ``_recursive_`` are refused with that explanation; ``_partial_: true`` gives the
callable with its given arguments bound, as in Hydra).
"""

from __future__ import annotations

import functools
import inspect
import re
import types
import typing
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from rsft.run.schema import ConfigError

#: ``@task``, ``@task.data``, ``@proposal.defensive``, ...: a slot filled with a component already built.
SLOT = re.compile(r"^@(?P<root>[A-Za-z_]\w*)(?P<path>(?:\.[A-Za-z_]\w*)*)$")
#: Hydra instantiation keys that rsft's builder does not implement.
UNSUPPORTED_KEYS = ("_args_", "_recursive_")
#: Hydra keys that carry no argument (``_convert_``: the builder always passes plain lists and dicts).
IGNORED_KEYS = ("_convert_",)
SIMPLE_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def build(node: DictConfig | ListConfig | Mapping | Any, where: str, provided: Mapping[str, Any] | None = None) -> Any:
    """The component described by ``node`` (the config at key ``where``), slots filled from ``provided``."""
    spec = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    return _build(spec, where, dict(provided or {}))


def is_slot(value: Any) -> bool:
    return isinstance(value, str) and SLOT.match(value) is not None


def _build(spec: Any, where: str, provided: dict[str, Any]) -> Any:
    if is_slot(spec):
        return _fill_slot(spec, where, provided)
    if isinstance(spec, list):
        return [_build(value, f"{where}[{i}]", provided) for i, value in enumerate(spec)]
    if not isinstance(spec, dict):
        return spec
    if "_target_" not in spec:
        return {key: _build(value, _join(where, key), provided) for key, value in spec.items()}
    for key in UNSUPPORTED_KEYS:
        if key in spec:
            raise ConfigError(f"{_join(where, key)}: rsft builds components itself and does not support {key}")
    target = _locate(spec["_target_"], where)
    partial = spec.get("_partial_", False)
    if not isinstance(partial, bool):
        raise ConfigError(f"{_join(where, '_partial_')}={partial!r} must be true or false")
    plain = {k: v for k, v in spec.items() if k not in ("_target_", "_partial_") and k not in IGNORED_KEYS}
    check_arguments(target, plain, where, partial=partial)
    kwargs = {key: _build(value, _join(where, key), provided) for key, value in plain.items()}
    if partial:  # the callable itself, its given arguments bound (e.g. a verifier function)
        return functools.partial(target, **kwargs)
    try:
        return target(**kwargs)
    except (ValueError, TypeError, KeyError) as err:
        message = err.args[0] if err.args and isinstance(err.args[0], str) else str(err)
        if where.split(".")[0] in message:
            raise  # the message already names the key
        raise type(err)(f"{where} ({spec['_target_']}): {message}") from err


def _fill_slot(slot: str, where: str, provided: dict[str, Any]) -> Any:
    match = SLOT.match(slot)
    assert match is not None
    root, path = match["root"], [part for part in match["path"].split(".") if part]
    if root not in provided:
        have = ", ".join(f"@{name}" for name in provided) or "none yet"
        raise ConfigError(
            f"{where}={slot!r} refers to the run's {root}, which is not built before {where.split('.')[0]} "
            f"(slots available here: {have})"
        )
    value, reached = provided[root], f"@{root}"
    for part in path:
        if not hasattr(value, part):
            raise ConfigError(
                f"{where}={slot!r}: the {root} ({type(provided[root]).__name__}) has no {part!r} at {reached}; "
                f"the component at {where.split('.')[0]} needs a {root} that provides it"
            )
        value, reached = getattr(value, part), f"{reached}.{part}"
    return value


def _locate(name: Any, where: str) -> Any:
    from hydra.utils import get_object

    if not isinstance(name, str):
        raise ConfigError(f"{where}._target_ must be a dotted name of a class or function, got {name!r}")
    try:
        return get_object(name)
    except Exception as err:  # noqa: BLE001 - Hydra raises ImportError or its own error types
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"{where}._target_={name!r} cannot be imported ({first})") from err


# -- checking the arguments against the target's signature -------------------------------------------
def check_arguments(target: Any, values: dict[str, Any], where: str, partial: bool = False) -> None:
    """Every key is a parameter of ``target``, every plain value has its parameter's annotated type, and every
    required parameter is given (unless ``partial``: the rest come at call time); else a :class:`ConfigError`
    naming the key."""
    parameters, open_ended = _parameters(target)
    if parameters is None:
        return
    for key, value in values.items():
        if key not in parameters:
            if open_ended:
                continue
            names = ", ".join(parameters) or "none"
            raise ConfigError(
                f"{_join(where, key)} is not a parameter of {_name(target)}: remove it (it takes {names})"
            )
        _check_value(_join(where, key), value, parameters[key])
    if partial:
        return
    missing = [
        name
        for name, p in parameters.items()
        if p.default is inspect.Parameter.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and name not in values
    ]
    if missing:
        keys = ", ".join(_join(where, m) for m in missing)
        raise ConfigError(f"{keys} must be set: {_name(target)} needs {'it' if len(missing) == 1 else 'them'}")


def _parameters(target: Any) -> tuple[dict[str, inspect.Parameter] | None, bool]:
    """The named parameters of ``target`` (a class's ``__init__`` merged with what its ``**kwargs`` reach in the
    base classes) with their annotations resolved, and whether it takes any keyword (``**kwargs`` unresolved)."""
    if inspect.isclass(target):
        functions = [klass.__init__ for klass in _class_chain(target)]
        if not functions:
            return {}, False  # no constructor of its own anywhere: it takes no arguments
    else:
        functions = [target]
    found: dict[str, inspect.Parameter] = {}
    for function in functions:
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            return None, True
        hints = _hints(function)
        params = list(signature.parameters.values())
        if inspect.isclass(target) and params and params[0].name == "self":
            params = params[1:]
        for p in params:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in found:
                continue
            found[p.name] = p.replace(annotation=hints.get(p.name, p.annotation))
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return found, False
    return found, True


def _class_chain(cls: type) -> list[type]:
    """``cls`` and the bases whose ``__init__`` a ``**kwargs`` may forward to, nearest first (own inits only)."""
    return [klass for klass in cls.__mro__ if "__init__" in vars(klass) and klass is not object]


def _hints(function: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function)
    except Exception:  # noqa: BLE001 - an annotation that cannot be resolved is simply not checked
        return {}


def _simple_kind(annotation: Any) -> tuple[type | None, bool]:
    """(the one simple type the annotation allows, whether None is allowed); (None, _) when not simple."""
    if annotation in SIMPLE_KINDS:
        return annotation, False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and rest[0] in SIMPLE_KINDS:
            return rest[0], len(rest) < len(args)
    return None, True


def _check_value(key: str, value: Any, parameter: inspect.Parameter) -> None:
    kind, optional = _simple_kind(parameter.annotation)
    if kind is None or is_slot(value) or isinstance(value, (dict, list)):
        return
    if value is None:
        if optional or parameter.default is None:
            return
        raise ConfigError(f"{key}=null is not allowed: set {key} to {SIMPLE_KINDS[kind]}")
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[kind]
    if not ok:
        what = SIMPLE_KINDS[kind] + (" or null" if optional else "")
        raise ConfigError(f"{key}={value!r} is not {what}: set {key} to {what}")


def _name(target: Any) -> str:
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(target))}"


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)
