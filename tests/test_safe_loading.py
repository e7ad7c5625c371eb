"""Checkpoints are read as weights only: a file that carries a pickled callable is refused, and its code never runs.

``torch.load(..., weights_only=False)`` unpickles anything, so a crafted checkpoint could run arbitrary code
when passed as ``model.init_checkpoint`` or ``resume``. The payload here is harmless: unpickling it would
create a marker file, which each test checks is never created.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from rsft.run.config import compose
from rsft.train import train

FAST = ["debug=fast", "eval_before=false", "logger=csv", "trainer.max_epochs=1", "model.pretrain.steps=0"]


class CreatesMarker:
    """Unpickling this calls ``open(marker, "w")``: the stand-in for code run by a malicious checkpoint."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def finished_run(run_dir: Path) -> Path:
    train(compose([*FAST, f"paths.output_dir={run_dir}"]))
    return run_dir / "checkpoints" / "last.ckpt"


def with_payload(ckpt: Path, out: Path, marker: Path) -> Path:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    state["payload"] = CreatesMarker(marker)
    torch.save(state, out)
    return out


def test_rsft_checkpoints_load_as_weights_only(tmp_path):
    state = torch.load(finished_run(tmp_path / "run"), map_location="cpu", weights_only=True)
    assert "state_dict" in state and "RejectionSamplingDataModule" in state


def test_init_checkpoint_with_a_pickled_callable_is_refused(tmp_path):
    marker = tmp_path / "marker"
    evil = with_payload(finished_run(tmp_path / "first"), tmp_path / "evil.ckpt", marker)
    cfg = compose([*FAST, f"model.init_checkpoint={evil}", f"paths.output_dir={tmp_path / 'run'}"])
    with pytest.raises(ValueError, match=re.escape(f"model.init_checkpoint={str(evil)!r} holds more than weights")):
        train(cfg)
    assert not marker.exists(), "the checkpoint's pickled code ran"


def test_init_checkpoint_of_weights_still_loads(tmp_path):
    first = finished_run(tmp_path / "first")
    train(compose([*FAST, f"model.init_checkpoint={first}", f"paths.output_dir={tmp_path / 'run'}"]))
    assert (tmp_path / "run" / "metrics.json").is_file()


@pytest.mark.parametrize("how", ["path", "auto"])
def test_resume_from_a_checkpoint_with_a_pickled_callable_is_refused(how, tmp_path):
    marker = tmp_path / "marker"
    run_dir = tmp_path / "run"
    last = finished_run(run_dir)
    if how == "path":
        evil = with_payload(last, tmp_path / "evil.ckpt", marker)
        resume = str(evil)
    else:  # the run dir's own last.ckpt was replaced
        evil = with_payload(last, last, marker)
        resume = "auto"
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    cfg = compose([*FAST, f"resume={resume}", "trainer.max_epochs=2", f"paths.output_dir={run_dir}"])
    with pytest.raises(ValueError, match=re.escape(f"resume={resume!r}: the checkpoint {str(evil)!r} holds more")):
        train(cfg)
    assert not marker.exists(), "the checkpoint's pickled code ran"
    # Refused before any work: the run dir is as it was (config.yaml and metrics.json included).
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
