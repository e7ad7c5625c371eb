"""Fault injection: W&B failing, the output dir becoming unwritable, SIGKILL of a credit run, a killed sweep.

test_resume.py covers SIGKILL + resume for the density experiment; the credit sibling here reuses its helpers.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_resume import TIMING, environment, final_metrics, finish

from rsft.run.config import compose
from rsft.train import train


def test_failing_wandb_then_full_disk_leave_a_finished_run_and_its_outputs(tmp_path, monkeypatch):
    import wandb

    def unreachable(*args, **kwargs):
        raise wandb.errors.CommError("wandb.init timed out: api.wandb.ai unreachable")

    monkeypatch.setattr(wandb, "init", unreachable)
    run_dir = tmp_path / "run"
    cfg = compose(
        ["debug=fast", "logger=both", "eval_before=false", "trainer.max_epochs=1", f"paths.output_dir={run_dir}"]
    )
    with pytest.warns(RuntimeWarning, match="W&B failed to start .*CommError.*the run continues without W&B"):
        train(cfg)
    # The run finished with its local logs.
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 1
    assert len((run_dir / "epochs.jsonl").read_text().splitlines()) == 1
    assert any((run_dir / "csv").rglob("metrics.csv"))
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()

    # Now the disk is full: continuing the run fails at once with a clear error and leaves every earlier
    # output as it was.
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    real_write_text = Path.write_text

    def disk_full(self, *args, **kwargs):
        if run_dir in self.parents:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", disk_full)
    again = compose(["debug=fast", "logger=csv", "resume=auto", "trainer.max_epochs=2", f"paths.output_dir={run_dir}"])
    with pytest.raises(OSError, match=r"paths.output_dir=.* is not writable \(No space left on device\)"):
        train(again)
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert after == before


# -- SIGKILL mid-run, then resume=auto: the credit experiment ------------------------------------

CREDIT = [
    "experiment=credit_german",
    "debug=fast",
    "trainer.max_epochs=6",
    "trainer.limit_train_batches=null",
    "logger=csv",
]


def credit_command(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "rsft.train", *CREDIT, f"hydra.run.dir={run_dir}", *extra]


@pytest.mark.slow
def test_killed_credit_run_resumes_to_the_same_result(tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    finish(credit_command(reference), tmp_path)

    proc = subprocess.Popen(
        credit_command(killed), cwd=tmp_path, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    epochs = killed / "epochs.jsonl"
    deadline = time.monotonic() + 300
    # Kill once at least one epoch is checkpointed, mid-way through the run.
    while proc.poll() is None and time.monotonic() < deadline:
        if (
            (killed / "checkpoints" / "last.ckpt").exists()
            and epochs.exists()
            and len(epochs.read_text().splitlines()) >= 2
        ):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "metrics.json").exists(), "the run finished before it could be killed"
    assert (killed / "checkpoints" / "last.ckpt").exists()

    finish(credit_command(killed, "resume=auto"), tmp_path)

    assert final_metrics(killed) == final_metrics(reference)  # exact equality, not approx
    rows = lambda d: [  # noqa: E731
        {k: v for k, v in json.loads(line).items() if k not in TIMING}
        for line in (d / "epochs.jsonl").read_text().splitlines()
    ]
    assert rows(killed) == rows(reference)


# -- a sweep killed mid-way and relaunched -----------------------------------------------------

SWEEP = ["-m", "debug=fast", "logger=none", "plot=false", "eval_before=false", "trainer.max_epochs=3", "seed=0,1,2"]


@pytest.mark.slow
def test_killed_sweep_relaunched_finishes_every_job_once(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "rsft.train", *SWEEP, f"hydra.sweep.dir={sweep}"]
    # Its own process group, so the kill takes the launcher and anything it started.
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 400
    while proc.poll() is None and time.monotonic() < deadline:
        finished = list(sweep.glob("*/metrics.json"))
        started_second = [p for p in sweep.glob("*/epochs.jsonl") if not (p.parent / "metrics.json").exists()]
        if len(finished) == 1 and started_second:
            break
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.parent: p.stat().st_mtime_ns for p in sweep.glob("*/metrics.json")}
    assert len(finished) == 1, "the sweep was not killed mid-way"

    relaunch = subprocess.run(
        [*cmd, "skip_finished=true", "resume=auto"],
        cwd=tmp_path,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert relaunch.returncode == 0, relaunch.stderr[-3000:]
    assert "not re-running" in relaunch.stdout + relaunch.stderr
    jobs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    assert sorted(re.search(r"seed=(\d+)", p.name).group(1) for p in jobs) == ["0", "1", "2"]  # none lost
    assert len([p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")]) == 3  # and no extra job
    for run_dir, stamp in finished.items():  # the finished job was not redone
        assert (run_dir / "metrics.json").stat().st_mtime_ns == stamp
    for run_dir in jobs:
        assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 3
