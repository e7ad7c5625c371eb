"""Group-level dynamic sampling (DAPO): the pass-rate band, rounds counted in groups, the per-round report."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from rsft.acceptance.base import AcceptAll, AllOf
from rsft.acceptance.lm import PassRateBand, Verifier
from rsft.metrics.pass_rates import PassRateReport
from rsft.proposals.base import Proposal
from rsft.proposals.distribution import gaussian
from rsft.sampling import AcceptanceBudgetError, SamplerSettings, rejection_sample
from rsft.tasks.base import Task


def _round(correct_counts: list[int], k: int) -> dict[str, torch.Tensor]:
    correct = torch.tensor([[j < c for j in range(k)] for c in correct_counts]).reshape(-1)
    group = torch.arange(len(correct_counts)).repeat_interleave(k)
    return {"correct": correct, "group": group, "prompt_id": group.clone()}


def test_the_report_tabulates_each_rounds_pass_rates_and_survives_a_checkpoint(tmp_path):
    report = PassRateReport()
    for epoch, counts in enumerate([[0, 0, 1, 4], [2, 3, 4, 4, 0]]):
        rule = AllOf([PassRateBand(), Verifier()])  # inside all_of the figures are prefixed rule0_
        rule.start()
        rule.accept(_round(counts, 4), torch.Generator().manual_seed(0))
        report.on_round(epoch, rule.stats(), {})
    restored = PassRateReport()
    restored.load_state_dict(report.state_dict())
    md, table, png = restored.write(tmp_path)
    assert table.read_text().splitlines() == [
        "round,groups drawn,groups kept,0/4 correct,1/4 correct,2/4 correct,3/4 correct,4/4 correct",
        "0,4,1,2,1,0,0,1",
        "1,5,2,1,0,1,1,2",
    ]
    assert "| 1 | 5 | 2 | 1 | 0 | 1 | 1 | 2 |" in md.read_text()
    assert png.is_file() and png.stat().st_size > 0


class GroupedCoins(Proposal):
    """Groups of k samples (consecutive rows, one ``group`` id each) of a prompt with pass probability drawn from
    ``probs``; ``pool`` prompts per round, drawn without replacement (capacity), or unlimited with pool=None."""

    def __init__(self, k: int = 4, probs: tuple[float, ...] = (0.1, 0.5, 0.9), pool: int | None = None):
        self.k, self.probs, self.pool, self.drawn = k, torch.tensor(probs), pool, 0

    def capacity(self) -> int | None:
        return None if self.pool is None else (self.pool - self.drawn // self.k) * self.k

    def sample(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        assert n % self.k == 0
        m = n // self.k
        p = self.probs[torch.randint(len(self.probs), (m,), generator=generator)]
        correct = (torch.rand((m, self.k), generator=generator) < p[:, None]).reshape(-1)
        group = (self.drawn // self.k + torch.arange(m)).repeat_interleave(self.k)
        self.drawn += n
        return {"correct": correct, "group": group, "prompt_id": group.clone()}


def test_counting_groups_returns_exactly_that_many_whole_groups():
    result = rejection_sample(GroupedCoins(), PassRateBand(), num_accepted=50, chunk_size=64, seed=0, count="groups")
    groups = result.batch["group"]
    assert result.stats["groups_accepted"] == 50 and torch.unique(groups).numel() == 50
    assert torch.bincount(groups - groups.min()).unique().tolist() in ([0, 4], [4])  # whole groups of 4
    hits = torch.zeros(int(groups.max()) + 1, dtype=torch.long).index_add_(0, groups, result.batch["correct"].long())
    kept_hits = hits[torch.unique(groups)]
    assert bool(((kept_hits > 0) & (kept_hits < 4)).all())  # all inside the band
    # the candidates counted run to the end of the last kept group
    assert result.stats["proposals"] == 4 * (int(groups.max()) + 1) <= result.stats["proposals_drawn"]
    assert result.stats["accepted"] == 200 and result.stats["groups_drawn"] * 4 == result.stats["proposals_drawn"]


def test_counting_groups_is_calibrated():
    """G = 3000 kept groups of k = 4 coins, p from {0.1, 0.5, 0.9}: the kept groups' correct counts follow the
    Binomial mixture restricted to the band 0 < c < 4 (χ²), and the groups drawn to keep G follow the negative
    binomial of P(in band) (z-test on its mean and variance); each fails at p < 1e-6, Bonferroni α/2 each
    (false-failure rate ≤ 1e-6). Mutations that fail it: the band's ends included (the histogram), and the candidates
    used counted to the end of the last chunk instead of the end of the last kept group (the negative binomial:
    chunks of 1024 groups make that visible)."""
    k, target = 4, 3000
    rule = PassRateBand()
    result = rejection_sample(GroupedCoins(k), rule, num_accepted=target, chunk_size=4096, seed=5, count="groups")
    groups = result.batch["group"]
    hits = torch.zeros(int(groups.max()) + 1, dtype=torch.long).index_add_(0, groups, result.batch["correct"].long())
    observed = torch.bincount(hits[torch.unique(groups)], minlength=k + 1)[1:k].tolist()
    pmf = torch.stack(
        [
            torch.tensor([math.comb(k, c) * p**c * (1 - p) ** (k - c) for c in range(k + 1)], dtype=torch.float64)
            for p in (0.1, 0.5, 0.9)
        ]
    ).mean(0)
    p_keep = float(pmf[1:k].sum())
    expected = (pmf[1:k] / p_keep * target).tolist()
    assert stats.chisquare(observed, expected).pvalue > 1e-6 / 2
    # groups drawn up to and including the last kept one: negative binomial (failures + target)
    drawn = result.stats["proposals"] / k
    mean, sd = target / p_keep, math.sqrt(target * (1 - p_keep)) / p_keep
    assert 2 * stats.norm.sf(abs(drawn - mean) / sd) > 1e-6 / 2


def test_a_pool_that_runs_out_says_so_with_the_counts():
    with pytest.raises(AcceptanceBudgetError, match=r"ran out of new items: every one was drawn once \(20 groups"):
        rejection_sample(GroupedCoins(pool=20), PassRateBand(), num_accepted=50, chunk_size=32, seed=0, count="groups")
    with pytest.warns(UserWarning, match="returning .* of 50 requested groups"):
        kept = rejection_sample(
            GroupedCoins(pool=20),
            PassRateBand(),
            num_accepted=50,
            chunk_size=32,
            seed=0,
            count="groups",
            allow_partial=True,
        )
    assert kept.stats["pool_exhausted"] == 1 and kept.stats["groups_drawn"] == 20


def test_a_band_no_group_meets_fails_fast_naming_the_band_and_the_rates_seen():
    hopeless = GroupedCoins(probs=(0.0,))  # every group all wrong: the default band keeps none
    with pytest.raises(AcceptanceBudgetError) as caught:
        rejection_sample(
            hopeless, PassRateBand(), num_accepted=10, chunk_size=64, max_proposals=4096, seed=0, count="groups"
        )
    message = str(caught.value)
    assert "groups" in message and "0 < rate < 1" in message and "0/4:" in message


def test_groups_need_num_accepted_and_a_group_field():
    with pytest.raises(ValueError, match="sampler.count=groups counts the prompt groups kept"):
        SamplerSettings(num_accepted=None, num_proposals=100, count="groups")
    with pytest.raises(KeyError, match="sampler.count=groups needs the batch field 'group'"):
        rejection_sample(gaussian(dim=1), AcceptAll(), num_accepted=5, seed=0, count="groups")


def test_group_counts_are_shared_between_ranks_and_add_up():
    """Two simulated ranks of one round: each keeps its share of the groups (whole prompts on one rank)."""
    from test_lm_ranks import rank_trainer

    from rsft.data import RejectionSamplingDataModule

    held = []
    for rank in range(2):
        data = RejectionSamplingDataModule(
            GroupedCoins(), PassRateBand(), Task(), {"num_accepted": 7, "chunk_size": 16, "count": "groups"}
        )
        data.trainer = rank_trainer(rank, 2)
        held.append(int(data.sample_round(None, 0).stats["groups_accepted"]))
    assert held == [4, 3]


def test_experiment_rft_dynamic_keeps_whole_groups_inside_the_band(run_config, tmp_path):
    """experiment=rft_dynamic end to end with a tiny random gpt2 and a verifier that passes odd-length replies:
    each round draws chunks of 2 prompts (k = 2) until 2 groups with 1 of 2 replies right are kept or the
    budget of 12 replies is spent; the rows trained on are the right replies of those groups only, and the
    pass-rate report is written. Mutations that fail it: the band's strict bounds made inclusive (2/2 groups
    kept), counting rows instead of groups (the round stops at 2 rows)."""
    import json
    import warnings

    from conftest import PROMPT_ROWS, prompt_run, write_jsonl

    from rsft.train import train

    data = write_jsonl(
        tmp_path / "mine.jsonl", PROMPT_ROWS + [{"problem": f"Add {i}?", "solution": f"#### {i}"} for i in range(10)]
    )
    overrides = prompt_run(
        data,
        "task.verifier={_target_:conftest.coin_verifier,_partial_:true}",
        "proposal.chunk_prompts=2",
        "sampler.num_accepted=2",
        "sampler.max_proposals=12",
        "sampler.save_accepted=true",
        "model.pretrain.steps=150",  # enough to end replies with eos (an unfinished reply counts as wrong)
        "model.net.lr=0.01",
        "proposal.max_new_tokens=16",
        "model.net.eval_max_new_tokens=16",
        "proposal.temperature=2.0",  # a group's two replies differ
        experiment="rft_dynamic",
    )
    cfg = run_config(*overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a round that spends its budget warns (allow_partial)
        train(cfg)
    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "epochs.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        kept, drawn = row["sampling/groups_accepted"], row["sampling/groups_drawn"]
        assert row["sampling/proposals_drawn"] == 2 * drawn <= 12 and drawn % 2 == 0  # whole chunks of 2 prompts
        # the band saw every drawn group; the engine kept the first 2 it passed (the last chunk cut after them)
        hist = sum(row.get(f"sampling/rule0_pass_rate_{c}_of_2", 0.0) for c in range(3))
        assert hist == drawn == row["sampling/rule0_groups_seen"]
        assert kept <= row["sampling/rule0_groups_kept"] == row.get("sampling/rule0_pass_rate_1_of_2", 0.0)
        assert kept == 2 or (kept < 2 and row["sampling/proposals_drawn"] == 12)  # its groups, or the budget spent
        assert row["sampling/accepted"] == kept  # one right reply per kept group (the other is wrong)
    assert any(r["sampling/groups_accepted"] == 2 for r in rows)
    batch = torch.load(run / "accepted" / "epoch_000.pt", weights_only=True)
    assert len(set(batch["prompt_id"].tolist())) == rows[0]["sampling/groups_accepted"]
    assert (run / "pass_rates.md").is_file() and "| 0 |" in (run / "pass_rates.md").read_text()


def test_debug_fast_caps_groups_not_rows_under_count_groups():
    """debug=fast caps sampler.num_accepted at 4 groups when the run counts groups (1,000 groups would spend every
    smoke round's budget), and at 1,000 rows otherwise."""
    from rsft.run.config import compose

    assert compose(["experiment=rft_dynamic", "debug=fast"]).sampler.num_accepted == 4
    assert compose(["experiment=density_grid25", "debug=fast"]).sampler.num_accepted == 1000
