"""Acceptance rules: which candidates of a batch stay (the ``acceptance/`` config group).

- :mod:`~rsft.acceptance.base`: the :class:`Acceptance` interface, :class:`ProbabilisticAcceptance`,
  ``all`` (:class:`AcceptAll`), ``all_of`` (:class:`AllOf`), the finiteness check;
- :mod:`~rsft.acceptance.density`: ``density_ratio`` (p / M q) and ``region`` (:class:`Ball`, :class:`Interval`);
- :mod:`~rsft.acceptance.fairness`: ``reweighing``, ``uniform_sampling``, ``preferential_sampling``;
- :mod:`~rsft.acceptance.lm`: ``verifier``, ``reward_threshold``, ``best_of_n``, ``boltzmann``, ``dedup``, ...;
- :mod:`~rsft.acceptance.drs`: ``drs`` (discriminator rejection sampling).
"""

from rsft.acceptance.base import AcceptAll, Acceptance, AllOf, NonFiniteDensityError, ProbabilisticAcceptance
from rsft.acceptance.density import Ball, DensityRatio, Interval, Region

__all__ = [
    "AcceptAll",
    "Acceptance",
    "AllOf",
    "Ball",
    "DensityRatio",
    "Interval",
    "NonFiniteDensityError",
    "ProbabilisticAcceptance",
    "Region",
]
