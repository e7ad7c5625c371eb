"""trainer=ddp_cpu: two gloo processes, each sampling its own share; totals, reduction, files written once.

Every rank must take the same number of optimizer steps (DDP all-reduces the gradients of every step):
the ranks pool what they accepted and each trains on its part (``rank_steps``), whatever each accepted.
The two-process runs are slow (each starts two Python processes); ``rank_steps`` is tested on its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from rsft.data import combine_rank_stats, rank_steps
from rsft.run.config import compose
from rsft.sampling import ENGINE_STAT_COMBINERS
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
    declared = {
        **ENGINE_STAT_COMBINERS,
        "log_M": "max",
        "envelope_violations": "sum",
        "rule0_envelope_violations": "sum",
        "rule0_max_log_ratio": "max",
        "round_correct": "mean",
    }
    out = combine_rank_stats([a, b], declared)
    assert out["proposals"] == 400 and out["accepted"] == 20 and out["envelope_violations"] == 2
    assert out["acceptance_rate"] == 20 / 400  # from the totals, not a mean of rates
    assert out["seconds"] == 4 and out["proposals_per_s"] == 480 / 4
    assert out["log_M"] == 3.0 and out["rule0_max_log_ratio"] == 0.7 and out["rule0_envelope_violations"] == 4
    assert out["round_correct"] == pytest.approx(0.3)
    # A figure nobody declared is refused, naming where to declare it (averaged, a count would read as a share).
    with pytest.raises(ValueError, match="'rule0_widgets' has no declared way to combine.*in MyRule.stat_combiners"):
        combine_rank_stats(
            [{**a, "rule0_widgets": 1.0}, {**b, "rule0_widgets": 2.0}],
            {**declared, "_owners": "MyRule.stat_combiners()"},
        )


def test_every_builtin_rule_and_proposal_declares_how_its_figures_combine():
    """Each built-in rule's and proposal's figures after a real sampling call are all declared (a multi-process run
    refuses undeclared ones), and every declaration names a known combination."""
    from rsft import rejection_sample
    from rsft.acceptance.density import DensityRatio, Region, TemperedDensityRatio
    from rsft.acceptance.lm import Dedup, MaxPerPrompt, ZeroVarianceFilter
    from rsft.proposals.distribution import gaussian

    proposal = gaussian(dim=2, scale=3.0)
    normal = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2), torch.ones(2)), 1)
    rules = [
        DensityRatio(normal),
        Region(lambda x: x.norm(dim=1) < 1.0),
        TemperedDensityRatio(normal, reference=proposal.dist),
    ]
    for rule in rules:
        result = rejection_sample(proposal, rule, num_proposals=4096, seed=0)
        numbers = {key for key, value in result.stats.items() if isinstance(value, (int, float))}  # what is combined
        missing = numbers - set(ENGINE_STAT_COMBINERS) - set(rule.stat_combiners())
        assert not missing, (type(rule).__name__, missing)
    lm_batch = {"prompt_id": torch.arange(8) // 2, "group": torch.arange(8) // 2, "reward": torch.rand(8)}
    lm_batch["path_hash"] = torch.arange(8)
    for rule in (Dedup(), MaxPerPrompt(1), ZeroVarianceFilter()):
        rule.start()
        rule.accept(lm_batch, torch.Generator().manual_seed(0))
        assert set(rule.stat_combiners()) == set(rule.stats()), type(rule).__name__
    for rule in rules:
        assert set(rule.stat_combiners().values()) <= {"sum", "mean", "max", "min"}


def test_multi_process_from_python_is_refused(tmp_path):
    cfg = compose(["experiment=density_grid25", "debug=fast", "trainer=ddp_cpu", f"paths.output_dir={tmp_path}"])
    with pytest.raises(ValueError, match="re-running the command line"):
        train(cfg)


def test_ddp_configs_compose():
    cpu = compose(["trainer=ddp_cpu"]).trainer
    assert (cpu.accelerator, cpu.devices, cpu.strategy.process_group_backend) == ("cpu", 2, "gloo")
    gpu = compose(["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"]).trainer
    assert (gpu.accelerator, gpu.devices, gpu.num_nodes, gpu.strategy) == ("gpu", 4, 2, "ddp")


@pytest.mark.parametrize("n", [1, 2, 3, 7, 256, 511, 512, 513, 1000, 1001, 1025])
@pytest.mark.parametrize(("world", "batch_size"), [(2, 256), (2, 1), (3, 100), (4, 7)])
def test_rank_steps_give_every_rank_the_same_steps_and_every_row_once(n, world, batch_size):
    order = torch.Generator().manual_seed(0)
    steps = [rank_steps(n, world, batch_size, r, order.manual_seed(5)) for r in range(world)]
    counts = {len(s) for s in steps}
    assert len(counts) == 1  # the same number of optimizer steps on every rank
    rows = [i for s in steps for part in s for i in part]
    if n < world:
        assert rows == [] and counts == {0}  # fewer rows than ranks: no steps anywhere (the caller skips)
        return
    assert sorted(rows) == list(range(n))  # every pooled row once: none dropped, none repeated
    sizes = [len(part) for s in steps for part in s]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1  # equal weight per row in the averaged gradient
    assert max(sizes) <= batch_size or (batch_size == 1 and n % world)
    assert counts == {min(-(-n // (world * batch_size)), n // world)}  # no more steps than batch_size needs


# -- real two-process runs (gloo) -------------------------------------------------------------------
TESTS = Path(__file__).resolve().parent
#: rft_arithmetic at a size that runs in seconds per process: 32 SFT and 32 answer-only problems, a one-layer
#: GPT of width 16, short answers, no pass@k evaluation (also used by tests/test_scale_out.py).
TINY_LM = [
    "task.num_sft=32",
    "task.num_answer_only=32",
    "task.num_eval=8",
    "task.num_train_eval=8",
    "proposal.chunk_prompts=8",
    "proposal.max_new_tokens=12",
    "model.net.n_embd=16",
    "model.net.n_layer=1",
    "model.net.eval_k=0",
    "model.net.eval_max_new_tokens=12",
]


def two_ranks(tmp_path: Path, *overrides: str, timeout: int = 400) -> tuple[Path, subprocess.CompletedProcess]:
    """``rsft-train trainer=ddp_cpu <overrides>`` in two processes; the run dir and the finished command."""
    run_dir = tmp_path / "run"
    path = [str(TESTS), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1", "PYTHONPATH": os.pathsep.join(path)}
    for var in ("LOCAL_RANK", "SLURM_NTASKS", "TORCHELASTIC_RUN_ID"):
        env.pop(var, None)
    args = ["trainer=ddp_cpu", "sampler.save_accepted=true", "logger=csv", f"hydra.run.dir={run_dir}", *overrides]
    done = subprocess.run(
        [sys.executable, "-m", "rsft.train", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return run_dir, done


def epoch_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "epochs.jsonl").read_text().splitlines()]


def accepted_parts(run_dir: Path, epoch: int, key: str) -> list[torch.Tensor]:
    return [torch.load(run_dir / "accepted" / f"epoch_{epoch:03d}_rank{r}.pt")[key] for r in (0, 1)]


@pytest.mark.slow
def test_ddp_cpu_two_ranks(tmp_path):
    run_dir, done = two_ranks(tmp_path, "experiment=density_grid25", "debug=fast", "sampler.num_accepted=1001")
    assert done.returncode == 0, done.stderr[-4000:]

    epochs = epoch_rows(run_dir)
    assert [row["epoch"] for row in epochs] == [0, 1]  # one row per epoch: written by rank 0 only
    for epoch in (0, 1):
        parts = accepted_parts(run_dir, epoch, "x")
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


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "accepted"),
    [
        # 1025 = 513 + 512: three mini-batches of 256 on rank 0, two on rank 1 before the ranks pooled.
        (["sampler.num_accepted=1025"], lambda n: n == 1025),
        # num_proposals: each rank accepts a random number of rows (mini-batches of 4 rows, all of them used,
        # so that the ranks' batch counts differ before pooling).
        (
            [
                "sampler.num_accepted=null",
                "sampler.num_proposals=3001",
                "model.batch_size=4",
                "trainer.limit_train_batches=1.0",
            ],
            lambda n: 0 < n < 3001,
        ),
        # rank 1 accepts nothing (a one-rank skip); rank 0 accepts all of its 1,000 candidates.
        (
            [
                "sampler.num_accepted=null",
                "sampler.num_proposals=2000",
                "sampler.on_empty=skip",
                "acceptance._target_=ddp_rules.AcceptOnRankZeroOnly",
            ],
            lambda n: n == 1000,
        ),
    ],
    ids=["num_accepted_1025", "num_proposals", "one_rank_skips"],
)
def test_ranks_that_accept_different_counts_take_the_same_steps(tmp_path, overrides, accepted):
    run_dir, done = two_ranks(tmp_path, "experiment=density_grid25", "debug=fast", *overrides)
    assert done.returncode == 0, done.stderr[-4000:]
    epochs = epoch_rows(run_dir)
    assert [row["epoch"] for row in epochs] == [0, 1]
    for row in epochs:
        assert accepted(row["sampling/accepted"]), row["sampling/accepted"]
        assert "train/loss" in row  # every round trained (on the pooled rows)
        counts = [len(p) for p in accepted_parts(run_dir, row["epoch"], "x")]
        assert sum(counts) == row["sampling/accepted"]
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_lm_round_over_two_ranks_gives_every_prompt_exactly_k_samples(tmp_path):
    k, prompts = 2, 32
    run_dir, done = two_ranks(
        tmp_path,
        "experiment=rft_arithmetic",
        "debug=fast",
        *TINY_LM,
        "proposal.pool=sft",
        f"proposal.k={k}",
        "eval_before=false",
        "acceptance=reward_threshold",
        "acceptance.threshold=-1e9",  # keep every candidate: the saved sets are the whole round
    )
    assert done.returncode == 0, done.stderr[-4000:]
    for row in epoch_rows(run_dir):
        parts = accepted_parts(run_dir, row["epoch"], "prompt_id")
        counts = Counter(torch.cat(parts).tolist())
        assert len(counts) == prompts and set(counts.values()) == {k}, counts  # exactly k each, over both ranks
        assert not set(parts[0].tolist()) & set(parts[1].tolist())  # whole prompts per rank
        assert row["sampling/round_candidates"] == prompts * k and row["sampling/round_prompts"] == prompts


@pytest.mark.slow
def test_a_rule_declares_how_its_new_count_combines_over_processes(tmp_path):
    """A rule from outside rsft (tests/ddp_rules.py) reports a new count and a new rate and declares them 'sum' and
    'mean': under two processes the count is the total over ranks and the rate the mean, with no change to rsft's
    data module. Mutation: declaring the count 'mean' gives half the total and fails."""
    run_dir, done = two_ranks(
        tmp_path,
        "experiment=density_grid25",
        "debug=fast",
        "sampler.num_accepted=null",
        "sampler.num_proposals=2000",
        "acceptance._target_=ddp_rules.CountingRule",
    )
    assert done.returncode == 0, done.stderr[-4000:]
    for row in epoch_rows(run_dir):
        assert row["sampling/proposals_drawn"] == 2000
        assert row["sampling/widgets_judged"] == 2000  # 1000 per rank, summed
        assert row["sampling/widget_share"] == pytest.approx(0.5)  # 0.5 on each rank, averaged
