"""Beyond one machine, run on this one: Ray sweeps on a two-node Ray cluster, two-node ``torchrun`` training,
and the sbatch script that ``hydra/launcher=submitit_slurm`` would submit.

Every process these tests start runs in a private network namespace whose only interface is ``lo``
(``tests/local_cluster.py`` says why), in a process group of its own, bounded in time; each test stops what
it started by process id and checks that nothing is left (``ip netns pids`` and the process groups).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from local_cluster import BIN, LoopbackNamespace, NamespaceUnavailable, RayCluster, group_members, start, stop
from test_ddp import TINY_LM

pytestmark = pytest.mark.slow


def job_env() -> dict[str, str]:
    """The environment of every process these tests start: offline, one thread, nothing launched by others."""
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "HYDRA_FULL_ERROR": "1",
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "GLOO_SOCKET_IFNAME": "lo",
    }
    for var in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "SLURM_NTASKS", "TORCHELASTIC_RUN_ID", "RAY_ADDRESS"):
        env.pop(var, None)
    return env


def run_bounded(namespace: LoopbackNamespace | None, argv: list[str], log: Path, cwd: Path, timeout: float) -> int:
    """Run ``argv`` (in the namespace, if one is given) in its own process group; kill the group if it outlives
    ``timeout``."""
    proc = start(namespace.wrap(argv) if namespace else argv, log, job_env(), cwd)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{argv[:4]} ran past {timeout} s:\n{log.read_text()[-3000:]}") from None
    finally:
        stop(proc, grace=10)
        assert group_members(proc.pid) == [], f"{argv[:4]} left processes behind"


def timing(key: str) -> bool:
    """Wall-clock figures: the only ones that may differ between two runs of the same job."""
    return key.endswith("seconds") or key.endswith("_per_s")


def figures(record: dict) -> dict:
    return {k: v for k, v in record.items() if not timing(k)}


def epoch_rows(run_dir: Path) -> list[dict]:
    return [figures(json.loads(line)) for line in (run_dir / "epochs.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def namespace():
    try:
        made = LoopbackNamespace()
    except (NamespaceUnavailable, FileNotFoundError) as err:
        pytest.skip(f"needs a private network namespace (root and `ip netns`): {err}")
    assert made.interfaces() == ["lo"]  # nothing in it can reach or be reached from another interface
    yield made
    left = made.pids()
    for pid in left:  # never leak into the machine, even when a test failed
        os.kill(pid, 9)
    made.delete()
    assert left == [], f"processes left in the namespace: {left}"


# -- Ray: sweeps, tables and relaunches on a two-node cluster -----------------------------------------
@pytest.fixture(scope="module")
def ray_cluster(namespace):
    # Ray's Unix socket paths must stay under 107 characters: a short directory of its own under /tmp.
    root = Path(os.path.realpath(tempfile.mkdtemp(prefix="rsray-")))
    cluster = RayCluster(namespace, root, job_env(), cpus_per_node=1)
    try:
        cluster.start(timeout=120)
        yield cluster
    finally:
        cluster.stop()
        left = cluster.leftovers()
        shutil.rmtree(root, ignore_errors=True)
        assert left == [], f"Ray processes left: {left}"


def ray_overrides(cluster: RayCluster) -> list[str]:
    return ["hydra/launcher=ray", f"hydra.launcher.ray.init.address={cluster.address}"]


SWEEP = ["debug=fast", "logger=none", "seed=0,1,2"]


@pytest.fixture(scope="module")
def ray_sweep(namespace, ray_cluster, tmp_path_factory):
    """``rsft-train -m hydra/launcher=ray seed=0,1,2 debug=fast`` on the cluster; its sweep dir."""
    work = tmp_path_factory.mktemp("ray_sweep")
    sweep = work / "sweep"
    argv = [sys.executable, "-m", "rsft.train", "-m", *ray_overrides(ray_cluster), *SWEEP, f"hydra.sweep.dir={sweep}"]
    code = run_bounded(namespace, argv, work / "sweep.log", work, timeout=300)
    assert code == 0, (work / "sweep.log").read_text()[-4000:]
    return sweep


def sweep_jobs(sweep: Path) -> dict[int, Path]:
    records = {d: json.loads((d / "run.json").read_text()) for d in sweep.iterdir() if (d / "run.json").is_file()}
    return dict(sorted((record["job_num"], d) for d, record in records.items()))


def test_ray_sweep_runs_every_job_on_the_cluster(ray_sweep, ray_cluster):
    """Mutation seen failing it: the launcher running the jobs in the driver process (no job's pid is a Ray
    worker's)."""
    jobs = sweep_jobs(ray_sweep)
    assert sorted(jobs) == [0, 1, 2]
    nodes = []
    for num, run_dir in jobs.items():
        for name in ("config.yaml", "metrics.json", "run.json", "epochs.jsonl", "checkpoints/last.ckpt"):
            assert (run_dir / name).is_file(), f"job {num}: no {name}"
        record = json.loads((run_dir / "run.json").read_text())
        assert record["status"] == "finished"
        assert record["launcher"] == "hydra_plugins.rsft_ray_launcher.ray_launcher.RayLauncher"
        assert record["sweep_dir"] == str(ray_sweep.resolve())
        assert f"seed={num}" in record["overrides"]
        assert yaml.safe_load((run_dir / "config.yaml").read_text())["seed"] == num
        assert len(record["job_id"]) > 20  # the Ray task id
        nodes.append(ray_cluster.node_of_worker_pid(record["pid"]))
    # Every job ran in a Ray worker process, one job per node at a time (num_cpus 1 of 1): both nodes worked.
    assert None not in nodes and set(nodes) == {"head", "worker"}, nodes


def test_relaunched_ray_sweep_finishes_only_the_missing_job(ray_sweep, ray_cluster, namespace, tmp_path):
    """Job 1 "died" after its last checkpoint, before metrics.json: the relaunch (skip_finished=true
    resume=auto, same sweep dir) leaves jobs 0 and 2 alone and ends job 1 with the figures it had.
    The resumed job's figures come from its last epochs.jsonl row: taking them from trainer.callback_metrics
    alone (empty after a resume from the last epoch) fails the fast twin of this test in test_sweep.py."""
    jobs = sweep_jobs(ray_sweep)
    lost = jobs[1] / "metrics.json"
    before = json.loads(lost.read_text())
    lost.unlink()
    stamps = {num: (d / "metrics.json").stat().st_mtime_ns for num, d in jobs.items() if num != 1}
    argv = [sys.executable, "-m", "rsft.train", "-m", *ray_overrides(ray_cluster), *SWEEP]
    argv += [f"hydra.sweep.dir={ray_sweep}", "skip_finished=true", "resume=auto"]
    code = run_bounded(namespace, argv, tmp_path / "relaunch.log", tmp_path, timeout=300)
    output = (tmp_path / "relaunch.log").read_text()
    assert code == 0, output[-4000:]
    assert {num: (jobs[num] / "metrics.json").stat().st_mtime_ns for num in stamps} == stamps
    for num in stamps:  # each skipped job said so in its own log
        assert "not re-running" in (jobs[num] / "train.log").read_text()
    assert "not re-running" not in (jobs[1] / "train.log").read_text()
    after = json.loads(lost.read_text())
    assert figures(after) == figures(before)
    assert sweep_jobs(ray_sweep).keys() == jobs.keys()  # no new run dir


TABLE = {
    "title": "Ray vs local launcher",
    "seeds": [0, 1],
    "overrides": ["experiment=density_grid25", "debug=fast", "logger=none", "trainer.max_epochs=1"],
    "metrics": ["val/nll", "sampling/acceptance_rate", "epoch[0]:train/loss"],
    "rows": [{"label": "scale 4", "overrides": ["proposal.scale=4.0"], "reference": {"val/nll": 6.5}}],
}


def test_table_on_ray_equals_the_local_table(ray_cluster, namespace, tmp_path):
    """``rsft-table`` through the Ray launcher gives the table of the local launcher, cell for cell.
    Mutation seen failing it: the Ray worker adding 1 to the job's seed."""
    spec = tmp_path / "ray_table.yaml"
    spec.write_text(yaml.safe_dump(TABLE))
    tables = {}
    for name, extra in (("local", []), ("ray", ray_overrides(ray_cluster))):
        out = tmp_path / name
        argv = [sys.executable, "-m", "rsft.tools.table", str(spec), "--output-root", str(out), *extra]
        code = run_bounded(namespace, argv, tmp_path / f"{name}.log", tmp_path, timeout=300)
        assert code == 0, (tmp_path / f"{name}.log").read_text()[-4000:]
        tables[name] = (out / spec.stem / "table.csv").read_text()
    assert tables["ray"] == tables["local"]
    assert "missing" not in tables["ray"] and tables["ray"].count("\n") == 1 + 3  # the header and 3 cells
    ray_runs = sorted((tmp_path / "ray" / spec.stem / "runs").glob("*/seed=*/run.json"))
    assert len(ray_runs) == 2
    assert all("RayLauncher" in json.loads(p.read_text())["launcher"] for p in ray_runs)


def test_stopping_the_ray_cluster_leaves_no_process(ray_cluster):
    """Mutation seen failing it: stop() stopping only the head node (the worker node's processes stay; the
    namespace fixture then kills them, so nothing leaks into the machine even then)."""
    assert len(ray_cluster.alive_nodes()) == 2
    ray_cluster.stop()
    assert ray_cluster.leftovers() == []


# -- torchrun: one job over two "nodes" -----------------------------------------------------------------
LM_SMALL = [
    *TINY_LM,
    "proposal.k=2",
    # Keep every candidate: after 5 pre-training steps the verifier accepts almost nothing, which would make
    # the per-rank sets compared below empty. The rounds, prompts and streams are the experiment's own.
    "acceptance=all",
]
MULTI_NODE_JOBS = {
    "density_grid25": ["experiment=density_grid25", "debug=fast"],
    "credit_german": ["experiment=credit_german", "trainer.max_epochs=3"],
    "rft_arithmetic": ["experiment=rft_arithmetic", "debug=fast", *LM_SMALL],
}


def two_node_torchrun(namespace: LoopbackNamespace, work: Path, overrides: list[str]) -> Path:
    """Two torchrun agents (one per "node", one process each) meeting at a c10d rendezvous on 127.0.0.1."""
    run_dir, port = work / "torchrun", namespace.free_port()
    torchrun = [str(BIN / "torchrun"), "--nnodes=2", "--nproc-per-node=1", "--max-restarts=0"]
    torchrun += ["--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", f"--rdzv-id={work.name}"]
    torchrun += ["--local-addr=127.0.0.1", "--rdzv-conf=join_timeout=120"]
    job = ["-m", "rsft.train", "trainer=ddp_cpu", "trainer.num_nodes=2", "trainer.devices=1", *overrides]
    job += ["logger=csv", "sampler.save_accepted=true", f"hydra.run.dir={run_dir}"]
    nodes = [start(namespace.wrap([*torchrun, *job]), work / f"node{r}.log", job_env(), work) for r in (0, 1)]
    try:
        codes = [node.wait(timeout=300) for node in nodes]
    except subprocess.TimeoutExpired:
        raise AssertionError("torchrun ran past 300 s:\n" + (work / "node0.log").read_text()[-3000:]) from None
    finally:
        for node in nodes:
            stop(node, grace=10)
        assert [group_members(node.pid) for node in nodes] == [[], []]
    assert codes == [0, 0], "\n".join((work / f"node{r}.log").read_text()[-3000:] for r in (0, 1))
    return run_dir


@pytest.mark.parametrize("job", list(MULTI_NODE_JOBS))
def test_two_node_torchrun_ends_with_the_two_process_metrics(job, namespace, tmp_path):
    """``torchrun --nnodes=2`` (two agents, one process each, ``trainer=ddp_cpu trainer.num_nodes=2
    trainer.devices=1``) against ``trainer=ddp_cpu`` (two processes on one node): the same global ranks, so
    each rank draws the same share from the same stream and every figure but the wall-clock ones is equal.
    Mutation seen failing it: the sampling stream keyed by the local rank instead of the global one (both
    torchrun ranks are local rank 0, so they drew the same stream and the figures differ from ddp_cpu's)."""
    overrides = MULTI_NODE_JOBS[job]
    run_dir = two_node_torchrun(namespace, tmp_path, overrides)
    reference = tmp_path / "ddp_cpu"
    argv = [sys.executable, "-m", "rsft.train", "trainer=ddp_cpu", *overrides, "logger=csv"]
    argv += ["sampler.save_accepted=true", f"hydra.run.dir={reference}"]
    assert run_bounded(namespace, argv, tmp_path / "ddp_cpu.log", tmp_path, timeout=300) == 0

    assert sorted(run_dir.rglob("metrics.json")) == [run_dir / "metrics.json"]  # one, from global rank 0
    logs = "".join((tmp_path / f"node{r}.log").read_text() for r in (0, 1))
    assert logs.count("rsft: finished") == 1
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert figures(metrics) == figures(json.loads((reference / "metrics.json").read_text()))
    assert epoch_rows(run_dir) == epoch_rows(reference)

    rows = epoch_rows(run_dir)
    for row in rows:
        parts = [torch.load(run_dir / "accepted" / f"epoch_{row['epoch']:03d}_rank{r}.pt") for r in (0, 1)]
        same = [torch.load(reference / "accepted" / f"epoch_{row['epoch']:03d}_rank{r}.pt") for r in (0, 1)]
        for part, ref in zip(parts, same):
            assert part.keys() == ref.keys() and all(torch.equal(part[k], ref[k]) for k in part)
        assert sum(len(next(iter(p.values()))) for p in parts) == row["sampling/accepted"]
        assert all(len(next(iter(p.values()))) > 0 for p in parts)  # both ranks sampled
        if "prompt_id" in parts[0]:  # LM rounds: whole prompts per rank, k samples each over both
            ids = [p["prompt_id"].tolist() for p in parts]
            assert not set(ids[0]) & set(ids[1])
            assert set(Counter(ids[0] + ids[1]).values()) == {2}
        elif "index" in parts[0]:  # rows of a data set, drawn with replacement: the ranks' draws differ
            assert not torch.equal(parts[0]["index"], parts[1]["index"])
        else:  # continuous draws: no row drawn by both ranks
            rows_seen = torch.cat([p["x"] for p in parts])
            assert torch.unique(rows_seen, dim=0).shape[0] == rows_seen.shape[0]


# -- SLURM: the script submitit would submit ----------------------------------------------------------
def test_submitit_slurm_renders_the_sbatch_script(tmp_path):
    """The real path (Hydra → hydra-submitit-launcher → submitit) up to ``sbatch``, which is a stand-in here
    that records its argument and refuses: the test reads the script it was given and the pickled jobs.
    Mutation seen failing it: ``nodes: 1`` in conf/hydra/launcher/submitit_slurm.yaml instead of
    trainer.num_nodes."""
    fake = tmp_path / "bin"
    fake.mkdir()
    stand_ins = {
        "sbatch": 'echo "$1" > "$(dirname "$0")/submitted"; echo "no SLURM here" >&2; exit 1',
        "srun": "exit 1",  # submitit only checks that it exists
    }
    for name, body in stand_ins.items():
        (fake / name).write_text(f"#!/bin/sh\n{body}\n")
        (fake / name).chmod(0o755)
    sweep = tmp_path / "sweep"
    overrides = ["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2", "experiment=rft_arithmetic"]
    # The console script, as users run it (under `python -m` the job function would be pickled from __main__).
    argv = ["env", f"PATH={fake}:{os.environ['PATH']}", str(BIN / "rsft-train"), "-m"]
    argv += ["hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=90"]
    argv += [*overrides, "seed=0,1", f"hydra.sweep.dir={sweep}"]
    code = run_bounded(None, argv, tmp_path / "submit.log", tmp_path, timeout=120)
    assert code != 0 and "no SLURM here" in (tmp_path / "submit.log").read_text()

    script = Path((fake / "submitted").read_text().strip())
    text = script.read_text()
    sbatch = dict(line[len("#SBATCH --") :].split("=", 1) for line in text.splitlines() if line.startswith("#SBATCH"))
    assert sbatch["nodes"] == "2" and sbatch["ntasks-per-node"] == "4" and sbatch["gpus-per-node"] == "4"
    assert sbatch["time"] == "90" and sbatch["partition"] == "gpu" and sbatch["cpus-per-task"] == "8"
    assert sbatch["array"] == "0-1%2"  # one array task per sweep job, at most array_parallelism (64) at once
    assert sbatch["signal"] == "USR2@120" and sbatch["mem"] == "64GB"
    srun = [line for line in text.splitlines() if line.startswith("srun")]
    assert len(srun) == 1 and re.search(rf"{re.escape(str(BIN))}/python\S* -u -m submitit\.core\._submit ", srun[0])
    assert str(sweep / ".submitit") in srun[0]

    # What each array task runs: rsft-train's job function with that job's overrides.
    jobs = []
    for path in sorted(script.parent.glob("*.pkl")):
        with path.open("rb") as handle:
            delayed = pickle.load(handle)
        launcher, (job_overrides, _key, num, *_rest) = delayed.function, delayed.args
        assert (launcher.task_function.__module__, launcher.task_function.__name__) == ("rsft.train", "_entry")
        jobs.append((num, job_overrides))
    assert sorted(jobs) == [(0, [*overrides, "seed=0"]), (1, [*overrides, "seed=1"])]
