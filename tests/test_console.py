"""A run's console holds rsft's own lines and real warnings, not library notices nobody asked for
(rsft.run.console): Lightning's litlogger tip and torch's LeafSpec deprecation warning."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings

import pytest

from rsft.run.config import compose
from rsft.train import train


def test_a_run_neither_logs_the_litlogger_tip_nor_warns_about_leafspec(tmp_path, capfd, caplog):
    cfg = compose(["debug=fast", "logger=csv", "plot=false", f"paths.output_dir={tmp_path / 'run'}"])
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")  # every warning is recorded, unless rsft drops it on purpose
        train(cfg)
    console = "".join(capfd.readouterr()) + caplog.text  # under pytest, log records go to caplog
    messages = [str(w.message) for w in caught]
    assert "rsft: finished" in console
    assert "litlogger" not in console
    assert not [m for m in messages if "LeafSpec" in m]
    # Only those two are dropped: Lightning's real warning about this config (4 batches, logging every 10
    # steps) still comes through.
    assert [m for m in messages if "log_every_n_steps" in m]


@pytest.mark.slow  # a ~20 s command-line start-up on a loaded machine
def test_the_command_line_console_has_neither(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "default"}
    env.pop("HYDRA_FULL_ERROR", None)
    done = subprocess.run(
        [sys.executable, "-m", "rsft.train", "debug=fast", "logger=csv", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    console = done.stdout + done.stderr
    assert "rsft: finished" in console
    assert "litlogger" not in console and "LeafSpec" not in console
    assert "log_every_n_steps" in console
