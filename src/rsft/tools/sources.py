"""Which files a result depends on, read statically (nothing is imported or run).

A published artifact (a table, an example's output, a benchmark) records the repository files its
producing code loads: the Python modules reachable by imports from its entry points, and the Hydra
config files its runs compose. ``rsft-docs stale`` compares them with later commits. The import graph is
read with ``ast`` from the source, so an import inside a function counts too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from rsft.run.config import REPO_ROOT, compose, conf_dir

SRC = REPO_ROOT / "src"


def module_file(module: str, roots: Iterable[Path] = (SRC, REPO_ROOT)) -> Path | None:
    """The file of a dotted module name under one of ``roots`` (a package's ``__init__.py``), or None."""
    parts = module.split(".")
    for root in roots:
        for candidate in (root.joinpath(*parts).with_suffix(".py"), root.joinpath(*parts, "__init__.py")):
            if candidate.is_file():
                return candidate
    return None


def module_name(path: Path, root: Path = SRC) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, package: str) -> set[str]:
    """The dotted names ``path`` imports that start with ``package`` (anywhere in the file)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == package:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # may name a submodule
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == package)
    return found


def import_graph(package: str = "rsft", root: Path = SRC) -> dict[str, set[str]]:
    """module -> the modules of ``package`` it imports (only names that are modules of the package)."""
    files = {module_name(p, root): p for p in root.joinpath(package).rglob("*.py")}
    graph = {}
    for name, path in files.items():
        graph[name] = {m for m in imported_modules(path, package) if m in files and m != name}
    return graph


def import_closure(files: Iterable[Path], packages: tuple[str, ...] = ("rsft", "benchmarks")) -> set[Path]:
    """``files`` and every module of ``packages`` they reach through imports (parent packages included)."""
    seen: set[Path] = set()
    todo = [Path(f).resolve() for f in files]
    while todo:
        path = todo.pop()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        for package in packages:
            for module in imported_modules(path, package):
                parts = module.split(".")
                for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
                    found = module_file(".".join(parts[:i]))
                    if found is not None:
                        todo.append(found.resolve())
    return seen


def config_targets(node: Any) -> set[str]:
    """Every ``_target_`` in a composed config (the classes and functions a run instantiates)."""
    found: set[str] = set()
    if isinstance(node, (DictConfig, dict)):
        for key, value in node.items():
            if key == "_target_" and isinstance(value, str):
                found.add(value)
            else:
                found |= config_targets(value)
    elif isinstance(node, (ListConfig, list, tuple)):
        for value in node:
            found |= config_targets(value)
    return found


def run_sources(overrides: list[str]) -> set[Path]:
    """Files an ``rsft-train <overrides>`` run loads: its config files and the code its config instantiates."""
    cfg = compose(list(overrides), return_hydra_config=True)
    conf = conf_dir()
    files = {conf / "train.yaml"}
    for group, option in cfg.hydra.runtime.choices.items():
        if option is None or str(group).startswith("hydra"):
            continue
        candidate = conf / str(group) / f"{option}.yaml"
        if candidate.is_file():
            files.add(candidate)
    entry_points = [SRC / "rsft" / "train.py"]
    container = OmegaConf.to_container(cfg, resolve=False)  # unresolved: hydra's own nodes need a live run
    container.pop("hydra", None)  # type: ignore[union-attr]
    for target in config_targets(container):
        module = target
        while module and module_file(module) is None:  # strip the class/function name
            module = module.rpartition(".")[0]
        if module:
            entry_points.append(module_file(module))  # type: ignore[arg-type]
    return files | import_closure(entry_points)


def relative(paths: Iterable[Path]) -> list[str]:
    """Repository-relative, sorted; files outside the repository are left out."""
    out = set()
    for path in paths:
        try:
            out.add(str(Path(path).resolve().relative_to(REPO_ROOT)))
        except ValueError:
            continue
    return sorted(out)
