"""``proposal=dataset``: candidates are rows of a fixed training set, drawn uniformly with replacement.

The rows live on the sampling device; a draw is one index gather, so a chunk of any size costs one
kernel. Every field of the training batch is carried (for credit: features ``x``, label ``y``,
sensitive attribute ``s``) plus ``index``, the row's position in the training set, which rules that
weight individual rows (preferential sampling) look up.
"""

from __future__ import annotations

from typing import Any

import torch

from rsft.batch import Batch, training_rows
from rsft.proposals.base import Proposal


class DatasetProposal(Proposal):
    """Uniform draws with replacement from the rows of ``data`` (the training split)."""

    def __init__(self, data: Any):
        rows = dict(training_rows(data))
        rows.setdefault("index", torch.arange(next(iter(rows.values())).shape[0]))
        self.rows = rows
        self.size = int(rows["index"].shape[0])

    def to(self, device: torch.device | str) -> DatasetProposal:
        moved = DatasetProposal.__new__(DatasetProposal)
        moved.rows = {k: v.to(device) for k, v in self.rows.items()}
        moved.size = self.size
        return moved

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        device = self.rows["index"].device
        if generator.device != device:
            raise ValueError(
                f"the dataset rows live on {device} but the generator on {generator.device}; "
                "move the proposal with .to()"
            )
        picks = torch.randint(self.size, (n,), generator=generator, device=device)
        return {k: v[picks] for k, v in self.rows.items()}
