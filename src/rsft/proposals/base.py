"""The proposal interface: draws a batch of candidates, and the hooks the training loop calls.

A proposal returns a batch (``rsft.batch.Batch``). A proposal that needs the model being trained
(on-policy) implements ``bind(model)``; the data module calls it before every sampling round. The other
hooks have defaults that suit a fixed proposal; the training loop calls each of them on every proposal.
"""

from __future__ import annotations

from typing import Any

import torch

from rsft.batch import Batch


class Proposal:
    """Base class. Subclasses implement :meth:`sample`; every other method has a default."""

    #: True when the proposal draws from the model being fine-tuned (its samples change as it trains).
    on_policy: bool = False

    def sample(self, n: int, generator: torch.Generator) -> Batch:  # pragma: no cover - interface
        raise NotImplementedError

    def to(self, device: torch.device | str) -> Proposal:
        return self

    #: Candidates that belong together and must be drawn by one rank (the k samples of one prompt): a
    #: rank's share of ``sampler.num_proposals`` is a whole number of such groups.
    group_size: int = 1

    def bind(self, model: Any) -> None:
        """Give the proposal the current model (on-policy proposals use it; others ignore it)."""

    def split_round(self, round_seed: int, rank: int, world: int) -> None:
        """Before each round (after :meth:`bind`): this rank's part of the round under multi-process training.

        ``round_seed`` is the same on every rank (derived from the run's seed and the epoch), so a proposal
        that must divide fixed items between ranks (the prompts of a round) can draw one order that all
        ranks share and take its ``rank``-th part of ``world``. The default does nothing: a proposal of
        independent draws needs no more than each rank's own stream.
        """

    def capacity(self) -> int | None:
        """How many more candidates this round can draw without repeating an item (the prompts left in the round,
        times k); None (the default) for a proposal of independent draws. Asked when ``sampler.count=groups``."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to continue exactly (saved in the checkpoint by the data module)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (called on resume before the first round)."""

    @property
    def event_shape(self) -> torch.Size | None:
        """Shape of one candidate ``x``, when the proposal has one."""
        return None

    def pretraining_source(self, model: Any = None) -> Proposal:
        """What ``model.pretrain`` trains on before the first round: by default the proposal itself."""
        return self

    def round_stats(self, accepted: Batch) -> dict[str, float]:
        """Figures of the round just sampled, beyond the engine's (logged; quoted when a round accepts nothing)."""
        return {}

    def stat_combiners(self) -> dict[str, str]:
        """How each figure of :meth:`round_stats` combines over processes (see ``Acceptance.stat_combiners``)."""
        return {}

    def training_rows(self, accepted: Batch) -> Batch:
        """The round's training set, built from its accepted rows: by default those rows themselves."""
        return accepted
