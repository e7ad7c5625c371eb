"""An acceptance rule for the two-process tests: rank 0 keeps every candidate, the other ranks none.

It makes one rank's round empty on purpose (a one-rank skip) in a real multi-process run; the run's
command line points ``acceptance._target_`` here (the tests directory is put on PYTHONPATH).
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
