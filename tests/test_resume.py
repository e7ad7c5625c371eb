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


def _run_killed_after_last_checkpoint(run_dir: Path, args: list[str], cwd: Path) -> None:
    tests_dir = str(Path(__file__).resolve().parent)
    env = environment()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (tests_dir, env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, "-m", "rsft.train", *args, f"hydra.run.dir={run_dir}"]
    kill = "+callbacks.kill._target_=fault_callbacks.KillAfterLastCheckpoint"
    done = subprocess.run([*cmd, kill], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]


WINDOW_CASES = {
    "density": ["experiment=density_grid25", "debug=fast", "trainer.max_epochs=3", "objective=val/nll"],
    # the tempered rule carries β and its envelope between rounds: the resumed run must not report another round
    "tempered": ["experiment=onpolicy_twisted", "debug=fast", "trainer.max_epochs=3", "objective=val/nll"],
    # the fairness report is written at the end of the fit, from figures collected during the run
    "credit": ["experiment=credit_german", "debug=fast", "trainer.max_epochs=3", "objective=val/balanced_accuracy"],
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(WINDOW_CASES))
def test_a_run_killed_after_its_last_checkpoint_resumes_to_the_same_result(tmp_path, case):
    """SIGKILL after the final last.ckpt but before metrics.json; resume=auto finishes with the uninterrupted run's
    metrics (val/*, train/loss and the last round's sampling figures: not those of a round sampled again), and a
    resume=auto of the finished run reports them unchanged without touching metrics.json.
    Mutation that fails it: final metrics from the trainer's live figures (the old _final_metrics) — after the
    resume they lack val/* and train/loss."""
    args = [*WINDOW_CASES[case], "logger=none"]
    objective = args[-2].split("=", 1)[1]
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    finish([sys.executable, "-m", "rsft.train", *args, f"hydra.run.dir={reference}"], tmp_path)
    _run_killed_after_last_checkpoint(killed, args, tmp_path)
    assert (killed / "checkpoints" / "last.ckpt").is_file() and not (killed / "metrics.json").exists()

    finish([sys.executable, "-m", "rsft.train", *args, f"hydra.run.dir={killed}", "resume=auto"], tmp_path)
    assert final_metrics(killed) == final_metrics(reference)
    assert objective in final_metrics(killed) and "train/loss" in final_metrics(killed)
    assert json.loads((killed / "run.json").read_text())["status"] == "finished"
    if case == "credit":
        assert (killed / "fairness_report.md").read_text() == (reference / "fairness_report.md").read_text()

    # resume=auto on a finished run: its metrics are reported unchanged (an objective sweep gets its value).
    stamp = (reference / "metrics.json").read_bytes()
    finish([sys.executable, "-m", "rsft.train", *args, f"hydra.run.dir={reference}", "resume=auto"], tmp_path)
    assert (reference / "metrics.json").read_bytes() == stamp
