"""Fault injection: W&B unreachable, the disk filling up mid-run, SIGKILL of a credit run, a killed sweep.

test_resume.py covers SIGKILL + resume for the density experiment; the credit sibling here reuses its helpers.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_resume import TIMING, environment, final_metrics, finish

from rsft.run.config import compose
from rsft.train import train


@pytest.fixture
def silent_server():
    """A TCP endpoint on 127.0.0.1 that accepts connections and never answers: W&B online, unreachable."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    accepted: list[socket.socket] = []

    def accept_forever() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # the server socket was closed: the test is over
                return
            accepted.append(conn)  # held open, never read or answered

    threading.Thread(target=accept_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", accepted
    server.close()
    for conn in accepted:
        conn.close()


@pytest.mark.timeout(180)  # nothing may hang: W&B's own default would wait 90 s per start
def test_unreachable_wandb_server_leaves_a_finished_run(tmp_path, monkeypatch, silent_server):
    url, accepted = silent_server
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_BASE_URL", url)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)  # a key, so W&B goes online instead of asking for a login
    run_dir = tmp_path / "run"
    cfg = compose(
        [
            "debug=fast",
            "logger=both",
            "logger.wandb.init_timeout=3",
            "eval_before=false",
            "trainer.max_epochs=1",
            f"paths.output_dir={run_dir}",
        ]
    )
    started = time.monotonic()
    with pytest.warns(RuntimeWarning, match="W&B failed to start .*CommError.*the run continues without W&B"):
        train(cfg)
    elapsed = time.monotonic() - started
    assert accepted, "W&B never reached the endpoint: the test did not exercise an unreachable server"
    assert elapsed < 60, f"the run waited {elapsed:.0f} s on W&B despite logger.wandb.init_timeout=3"
    # The run finished with its local logs.
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 1
    assert len((run_dir / "epochs.jsonl").read_text().splitlines()) == 1
    assert any((run_dir / "csv").rglob("metrics.csv"))
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def limit_file_size(limit: int):
    """For a child process: files may not grow past ``limit`` bytes; a write beyond it fails with EFBIG
    (SIGXFSZ ignored, so the write returns an error instead of killing the process)."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    return apply


@pytest.mark.slow  # ~40 s on the shared 2-core machine: one run, then a command-line resume
def test_a_full_disk_mid_run_fails_clearly_and_keeps_earlier_outputs(tmp_path):
    run_dir = tmp_path / "run"
    fast = ["debug=fast", "logger=csv", "eval_before=false"]
    train(compose([*fast, "trainer.max_epochs=1", f"paths.output_dir={run_dir}"]))
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    last = run_dir / "checkpoints" / "last.ckpt"
    # Small files (config, records, log rows) still fit; the next checkpoint, written by torch.save after the
    # second epoch's training, does not: the disk "fills up" mid-run.
    limit = len(before[last]) // 2
    assert limit > max(len(b) for p, b in before.items() if p.suffix != ".ckpt") * 4
    done = subprocess.run(
        [sys.executable, "-m", "rsft.train", *fast, "resume=auto", "trainer.max_epochs=2", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        env={k: v for k, v in environment().items() if k != "HYDRA_FULL_ERROR"},
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=limit_file_size(limit),
    )
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("rsft-train: error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    assert re.search(r"paths.output_dir=.* ran out of space \(File too large\).*resume=auto", errors[0]), errors[0]
    assert "Traceback" not in done.stderr
    # It failed mid-run, after training the second epoch: its log row was written.
    rows = (run_dir / "epochs.jsonl").read_text().splitlines()
    assert len(rows) == 2
    # Nothing half-written: every checkpoint is byte-identical and no partial file is left beside them;
    # metrics.json is absent (the run did not finish) or whole.
    checkpoints = {p: b for p, b in before.items() if p.parent.name == "checkpoints"}
    assert {p: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()} == checkpoints
    metrics = run_dir / "metrics.json"
    assert not metrics.exists() or json.loads(metrics.read_text())
    assert not list(run_dir.rglob("*.tmp"))
    # The append-only logs keep their earlier bytes.
    for name in ("epochs.jsonl",):
        assert (run_dir / name).read_bytes().startswith(before[run_dir / name])


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
