"""Sweeps: launcher configs, the Optuna search, run.json records, and skipping finished jobs on relaunch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
import yaml
from omegaconf import OmegaConf

from rsft.run.config import compose
from rsft.train import train

TINY = ["experiment=density_grid25", "debug=fast", "trainer.max_epochs=1", "logger=none", "eval_before=false"]


def run_cli(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "rsft.train", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def launcher(overrides: list[str]):
    return compose(overrides, return_hydra_config=True).hydra.launcher


def test_submitit_launchers_compose_and_instantiate():
    local = launcher(["hydra/launcher=submitit_local"])
    assert local._target_.endswith("submitit_launcher.LocalLauncher")
    assert local.submitit_folder.endswith("/.submitit/%j")
    hydra.utils.instantiate(local)  # the plugin accepts every field

    # Multi-node DDP on SLURM: one task per GPU on every node, as many nodes as the trainer has.
    slurm = launcher(
        [
            "hydra/launcher=submitit_slurm",
            "trainer=ddp",
            "trainer.devices=4",
            "trainer.num_nodes=2",
            "hydra.launcher.partition=gpu",
        ]
    )
    assert slurm._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (slurm.nodes, slurm.tasks_per_node, slurm.gpus_per_node, slurm.partition) == (2, 4, 4, "gpu")
    hydra.utils.instantiate(slurm)
    single = launcher(["hydra/launcher=submitit_slurm"])
    assert (single.nodes, single.tasks_per_node) == (1, 1)


def test_ray_launcher_config():
    """hydra/launcher=ray is rsft's launcher on Ray (hydra_plugins.rsft_ray_launcher): it composes, builds, and
    refuses a bad Ray option or an address nobody listens on with one error naming the key."""
    cfg = launcher(["hydra/launcher=ray"])
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert plain == {
        "_target_": "hydra_plugins.rsft_ray_launcher.ray_launcher.RayLauncher",
        "ray": {"init": {"address": None}, "remote": {"num_cpus": 1, "num_gpus": 0, "max_calls": 1}},
    }
    try:  # where the Hydra plugin of the same name is installed, Hydra checks the file against its schema too
        from hydra_plugins.hydra_ray_launcher._config import RayLauncherConf
    except ImportError:
        pass
    else:
        OmegaConf.merge(OmegaConf.structured(RayLauncherConf), plain)
    pytest.importorskip("ray")
    from hydra_plugins.rsft_ray_launcher.ray_launcher import RayLauncher, check_reachable

    assert RayLauncher(**{k: v for k, v in plain.items() if k != "_target_"}).task_options["max_calls"] == 1
    with pytest.raises(ValueError, match=r"hydra\.launcher\.ray\.remote=.*num_cpu"):
        RayLauncher(ray={"remote": {"num_cpu": 1}})
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectionError, match=rf"hydra\.launcher\.ray\.init\.address='127\.0\.0\.1:{port}'.*ray start"):
        check_reachable(f"127.0.0.1:{port}")


def test_hparams_search_names_real_keys():
    cfg = compose(["hparams_search=density_onpolicy_optuna"], return_hydra_config=True)
    assert cfg.name == "density_onpolicy" and cfg.objective == "val/nll"
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert cfg.hydra.sweeper.direction == "minimize"
    for key in cfg.hydra.sweeper.params:  # every searched key exists in the experiment's config
        assert OmegaConf.select(cfg, key) is not None, key


def test_run_record_and_skip_finished(tmp_path):
    run_dir = tmp_path / "run"
    cfg = compose([*TINY, "objective=val/nll", f"paths.output_dir={run_dir}"])
    value = train(cfg)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished" and record["mode"] == "api" and record["sweep_dir"] is None
    assert record["run_dir"] == str(run_dir.resolve())
    metrics_file = run_dir / "metrics.json"
    assert value == json.loads(metrics_file.read_text())["val/nll"]

    # Same config and skip_finished=true: nothing re-runs, the stored objective comes back.
    stamp = metrics_file.stat().st_mtime_ns
    again = compose([*TINY, "objective=val/nll", "skip_finished=true", f"paths.output_dir={run_dir}"])
    assert train(again) == value
    assert metrics_file.stat().st_mtime_ns == stamp

    # A different config in the same dir is not "finished": the stale metrics go and the job runs.
    other = compose([*TINY, "objective=val/nll", "skip_finished=true", "seed=1", f"paths.output_dir={run_dir}"])
    assert train(other) != value
    assert metrics_file.stat().st_mtime_ns != stamp
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["seed"] == 1


def test_relaunch_after_the_last_checkpoint_keeps_the_figures(tmp_path):
    """A job killed after its last epoch's checkpoint but before metrics.json: relaunched with resume=auto it
    has nothing left to train, and its metrics.json holds the figures of the uninterrupted run (timings
    aside). Mutation that fails it: taking the figures from trainer.callback_metrics alone (empty then)."""
    run_dir = tmp_path / "run"
    cfg = compose([*TINY, f"paths.output_dir={run_dir}"])
    train(cfg)
    metrics_file = run_dir / "metrics.json"
    first = json.loads(metrics_file.read_text())
    metrics_file.unlink()
    train(compose([*TINY, "resume=auto", "skip_finished=true", f"paths.output_dir={run_dir}"]))
    again = json.loads(metrics_file.read_text())

    def untimed(metrics: dict) -> dict:
        return {k: v for k, v in metrics.items() if not (k.endswith("seconds") or k.endswith("_per_s"))}

    assert "val/nll" in again and "train/loss" in again
    assert untimed(again) == untimed(first)


@pytest.mark.slow
def test_submitit_local_sweep_then_relaunch_skips_finished(tmp_path):
    sweep = tmp_path / "sweep"
    args = [*TINY, "seed=0,1", f"hydra.sweep.dir={sweep}"]
    run_cli(["-m", "hydra/launcher=submitit_local", *args], cwd=tmp_path)
    jobs = {}
    for run_dir in sorted(p.parent for p in sweep.glob("*/run.json")):
        record = json.loads((run_dir / "run.json").read_text())
        assert record["sweep_dir"] == str(sweep.resolve()) and record["mode"] == "multirun"
        assert record["launcher"].endswith("LocalLauncher")
        assert (run_dir / "metrics.json").is_file()
        jobs[record["job_num"]] = (run_dir, record)
    assert sorted(jobs) == [0, 1]
    assert [o for o in jobs[1][1]["overrides"] if o.startswith("seed=")] == ["seed=1"]
    assert (sweep / ".submitit").is_dir()

    # Job 1 "died": relaunching the sweep into the same dir re-runs it and skips job 0.
    done_dir, lost_dir = jobs[0][0], jobs[1][0]
    (lost_dir / "metrics.json").unlink()
    stamp = (done_dir / "metrics.json").stat().st_mtime_ns
    out = run_cli(["-m", *args, "skip_finished=true"], cwd=tmp_path)
    assert (done_dir / "metrics.json").stat().st_mtime_ns == stamp
    assert (lost_dir / "metrics.json").is_file()
    assert sorted(p.name for p in sweep.iterdir() if (p / "run.json").is_file()) == sorted(
        [done_dir.name, lost_dir.name]
    )
    assert "not re-running" in out.stdout + out.stderr


@pytest.mark.slow
def test_optuna_search_few_trials(tmp_path):
    sweep = tmp_path / "search"
    run_cli(
        [
            "hparams_search=density_onpolicy_optuna",
            "debug=fast",
            "trainer.max_epochs=1",
            "logger=none",
            "sampler.num_accepted=500",
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.sampler.n_startup_trials=2",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
    )
    trials = [json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")]
    assert len(trials) == 3
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert result["best_value"] == pytest.approx(min(t["val/nll"] for t in trials))
    assert set(result["best_params"]) == {"proposal.defensive.scale", "model.net.lr"}
    assert 2.0 <= result["best_params"]["proposal.defensive.scale"] <= 6.0
