"""Shared test helpers: compose configs as rsft-train would and run them into a temporary run dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))


def compose_run(overrides: list[str], run_dir: Path):
    """The config ``rsft-train <overrides>`` would run, writing into ``run_dir``."""
    from rsft.run.config import compose

    return compose([*overrides, f"paths.output_dir={run_dir}"])


@pytest.fixture
def run_config(tmp_path):
    def make(*overrides: str, run_dir: Path | None = None):
        return compose_run(list(overrides), run_dir or tmp_path / "run")

    return make
