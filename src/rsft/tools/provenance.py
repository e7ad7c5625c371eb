"""Provenance of a published artifact: what produced it, on which code, where, and how long it took.

Every artifact directory (``experiments/results/<name>/``, ``benchmarks/results/<name>/``) holds a
``provenance.json`` written by :func:`write_artifact` beside the files the docs embed, so a figure in a
README traces to the command, the commit (and whether the tree was dirty), the package versions and the
machine that made it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from rsft.run.config import REPO_ROOT

PROVENANCE = "provenance.json"
#: Where published artifacts live (repository-relative).
ARTIFACT_DIRS = ("experiments/results", "benchmarks/results")
FIGURES = "figures.json"
#: Distributions whose versions change results (or their speed).
PACKAGES = ("rsft", "torch", "pytorch-lightning", "hydra-core", "omegaconf", "numpy", "scipy", "zuko", "fairlearn")


def git_state(repo: Path = REPO_ROOT) -> dict[str, Any]:
    """The commit checked out at ``repo`` and whether tracked files differ from it (None outside git)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    # Published artifacts are outputs, not code: rewriting one must not make the next producer "dirty".
    outputs = [f":(exclude){path}" for path in ARTIFACT_DIRS]
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", *outputs)
    diff = git("diff", "HEAD", "--", ".", *outputs)
    return {
        "commit": commit,
        "dirty": None if status is None else bool(status),
        # what the tracked files hold, commit and uncommitted edits together: compared at start and end
        "tree": None if diff is None else hashlib.sha256(f"{commit}\n{diff}".encode()).hexdigest()[:16],
    }


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            return next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def cpu_capability() -> str:
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def machine() -> dict[str, Any]:
    import torch

    return {
        "cpu": cpu_model(),
        # The vector instructions torch's CPU kernels use (e.g. AVX2, AVX512): floating-point results, and so the
        # figures of a chaotic training loop, are reproducible bitwise only on the same capability.
        "cpu_capability": cpu_capability(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def provenance(
    command: list[str] | str,
    wall_seconds: float,
    sources: list[str],
    seeds: list[int] | None = None,
    started: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The provenance record of one artifact (``sources``: repository-relative files its producer loads).

    ``started`` is :func:`git_state` when the producer started: if the code changed while it ran (a commit,
    a checkout, an edit), the record keeps the commit it started from, says the tree was dirty and sets
    ``code_changed_during_run``, so nobody reads a mixed result as one commit's.
    """
    state = git_state()
    if started is not None and started.get("tree") != state.get("tree"):
        state = {**started, "dirty": True, "code_changed_during_run": True}
    return {
        "command": command if isinstance(command, str) else shlex.join(command),
        **state,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "wall_seconds": round(float(wall_seconds), 1),
        "seeds": seeds,
        "packages": package_versions(),
        "machine": machine(),
        "sources": sources,
        **extra,
    }


def write_artifact(
    directory: Path, files: dict[str, str], figures: dict[str, Any], record: dict[str, Any]
) -> list[Path]:
    """Write an artifact directory: ``files`` (name -> text), ``figures.json`` and ``provenance.json``.

    Each file goes to a temporary name first and is renamed into place, so an interrupted write leaves the
    previous artifact, never half of a new one.
    """
    directory.mkdir(parents=True, exist_ok=True)
    texts = {**files, FIGURES: _dump(figures), PROVENANCE: _dump(record)}
    written = []
    for name, text in texts.items():
        path = directory / name
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        written.append((tmp, path))
    for tmp, path in written:
        os.replace(tmp, path)
    return [path for _, path in written]


def read_provenance(directory: Path) -> dict[str, Any]:
    return json.loads((directory / PROVENANCE).read_text())


def read_figures(directory: Path) -> dict[str, Any]:
    path = directory / FIGURES
    return json.loads(path.read_text()) if path.is_file() else {}


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True, allow_nan=True) + "\n"
