"""Acceptance rules for the two-process tests (the run's command line points ``acceptance._target_`` here; the
tests directory is put on PYTHONPATH).

``AcceptOnRankZeroOnly`` keeps every candidate on rank 0 and none elsewhere: one rank's round is empty on
purpose (a one-rank skip). ``CountingRule`` reports figures of its own and declares how they combine.
"""

from __future__ import annotations

import torch

from rsft.acceptance.base import Acceptance
from rsft.batch import Batch


class AcceptOnRankZeroOnly(Acceptance):
    """Accept everything on rank 0 and nothing elsewhere (keyword arguments of the replaced rule are ignored)."""

    def __init__(self, **replaced_rule_settings):
        pass

    def accept(self, batch: Batch, generator: torch.Generator) -> torch.Tensor:
        n = next(iter(batch.values())).shape[0]
        on_rank_zero = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
        return torch.full((n,), on_rank_zero, dtype=torch.bool, device=next(iter(batch.values())).device)


class CountingRule(Acceptance):
    """Accept everything; report a count of its own (summed over ranks) and a rate (averaged), declared as such."""

    def __init__(self, **replaced_rule_settings):
        self.judged = 0

    def start(self) -> None:
        self.judged = 0

    def accept(self, batch: Batch, generator: torch.Generator) -> torch.Tensor:
        n = next(iter(batch.values())).shape[0]
        self.judged += n
        return torch.ones(n, dtype=torch.bool, device=next(iter(batch.values())).device)

    def stats(self) -> dict[str, float]:
        return {"widgets_judged": float(self.judged), "widget_share": 0.5}

    def stat_combiners(self) -> dict[str, str]:
        return {"widgets_judged": "sum", "widget_share": "mean"}
