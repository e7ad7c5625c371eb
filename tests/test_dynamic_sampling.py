"""Group-level dynamic sampling (DAPO): the pass-rate band, rounds counted in groups, the per-round report."""

from __future__ import annotations

import torch

from rsft.acceptance.base import AllOf
from rsft.acceptance.lm import PassRateBand, Verifier
from rsft.metrics.pass_rates import PassRateReport


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
