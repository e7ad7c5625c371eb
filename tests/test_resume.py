"""resume=auto after SIGKILL: the same final metrics (bitwise, on CPU) and the same W&B run as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ARGS = ["experiment=density_grid25", "debug=fast", "trainer.max_epochs=5", "eval_before=true", "logger=wandb"]
# Timings differ between any two runs; everything else must not.
#: Figures that measure time, so differ between two runs of the same computation.
TIMING = (
    "wall_seconds",
    "sampling/seconds",
    "sampling/proposals_per_s",
    "sampling/accepted_per_s",
    "sampling/round_tokens_per_s",
)


def command(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "rsft.train", *ARGS, f"hydra.run.dir={run_dir}", *extra]


def environment() -> dict[str, str]:
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}
    env.pop("WANDB_API_KEY", None)
    return env


def finish(cmd: list[str], cwd: Path) -> None:
    done = subprocess.run(cmd, cwd=cwd, env=environment(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def final_metrics(run_dir: Path) -> dict[str, float]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if k not in TIMING}


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    finish(command(reference), tmp_path)

    proc = subprocess.Popen(
        command(killed), cwd=tmp_path, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    checkpoint = killed / "checkpoints" / "last.ckpt"  # Lightning writes it atomically (temp file, then rename)
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoint.exists(), "the run ended before its first checkpoint"
    assert not (killed / "metrics.json").exists(), "the run finished before it could be killed"
    epochs_done = len((killed / "epochs.jsonl").read_text().splitlines())
    assert epochs_done < 5

    finish(command(killed, "resume=auto"), tmp_path)

    assert final_metrics(killed) == final_metrics(reference)  # exact equality, not approx
    rows = lambda d: [  # noqa: E731
        {k: v for k, v in json.loads(line).items() if k not in TIMING}
        for line in (d / "epochs.jsonl").read_text().splitlines()
    ]
    assert rows(killed) == rows(reference)

    # Both pieces of the killed run log to one W&B run: the id kept in the run dir.
    run_id = (killed / "wandb" / "rsft_run_id").read_text().strip()
    pieces = sorted((killed / "wandb").glob("offline-run-*"))
    assert len(pieces) == 2 and all(p.name.endswith(f"-{run_id}") for p in pieces)
    reference_id = (reference / "wandb" / "rsft_run_id").read_text().strip()
    assert reference_id != run_id
