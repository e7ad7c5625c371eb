"""trainer=ddp_cpu: two gloo processes, each sampling its own share; totals, reduction, files written once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from rsft.data import combine_rank_stats
from rsft.run.config import compose
from rsft.train import train


def test_rank_stats_combine():
    a = {
        "proposals": 100.0,
        "proposals_drawn": 120.0,
        "accepted": 10.0,
        "acceptance_rate": 0.1,
        "seconds": 2.0,
        "proposals_per_s": 60.0,
        "log_M": float("nan"),
        "envelope_violations": 1.0,
        "rule0_envelope_violations": 2.0,
        "rule0_max_log_ratio": 0.5,
        "round_correct": 0.2,
    }
    b = {
        **a,
        "proposals": 300.0,
        "proposals_drawn": 360.0,
        "accepted": 10.0,
        "seconds": 4.0,
        "log_M": 3.0,
        "rule0_max_log_ratio": 0.7,
        "round_correct": 0.4,
    }
    out = combine_rank_stats([a, b])
    assert out["proposals"] == 400 and out["accepted"] == 20 and out["envelope_violations"] == 2
    assert out["acceptance_rate"] == 20 / 400  # from the totals, not a mean of rates
    assert out["seconds"] == 4 and out["proposals_per_s"] == 480 / 4
    assert out["log_M"] == 3.0 and out["rule0_max_log_ratio"] == 0.7 and out["rule0_envelope_violations"] == 4
    assert out["round_correct"] == pytest.approx(0.3)


def test_multi_process_from_python_is_refused(tmp_path):
    cfg = compose(["experiment=density_grid25", "debug=fast", "trainer=ddp_cpu", f"paths.output_dir={tmp_path}"])
    with pytest.raises(ValueError, match="re-running the command line"):
        train(cfg)


def test_ddp_configs_compose():
    cpu = compose(["trainer=ddp_cpu"]).trainer
    assert (cpu.accelerator, cpu.devices, cpu.strategy.process_group_backend) == ("cpu", 2, "gloo")
    gpu = compose(["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"]).trainer
    assert (gpu.accelerator, gpu.devices, gpu.num_nodes, gpu.strategy) == ("gpu", 4, 2, "ddp")


@pytest.mark.slow
def test_ddp_cpu_two_ranks(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}
    for var in ("LOCAL_RANK", "SLURM_NTASKS", "TORCHELASTIC_RUN_ID"):
        env.pop(var, None)
    args = [
        "experiment=density_grid25",
        "debug=fast",
        "trainer=ddp_cpu",
        "sampler.num_accepted=1001",
        "sampler.save_accepted=true",
        "logger=csv",
        f"hydra.run.dir={run_dir}",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "rsft.train", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]

    epochs = [json.loads(line) for line in (run_dir / "epochs.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in epochs] == [0, 1]  # one row per epoch: written by rank 0 only
    for epoch in (0, 1):
        parts = [torch.load(run_dir / "accepted" / f"epoch_{epoch:03d}_rank{r}.pt")["x"] for r in (0, 1)]
        assert [len(p) for p in parts] == [501, 500]  # shares differ by at most one and add up
        rows = torch.cat(parts)
        assert torch.unique(rows, dim=0).shape[0] == 1001  # no sample drawn by both ranks
        assert epochs[epoch]["sampling/accepted"] == 1001  # logged: the total over ranks
        assert epochs[epoch]["sampling/proposals"] >= 1001
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["sampling/accepted"] == 1001
    assert metrics["sampling/acceptance_rate"] == pytest.approx(1001 / metrics["sampling/proposals"])
    assert done.stdout.count("rsft: finished") == 1  # the summary (and metrics.json) come from rank 0 only
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
