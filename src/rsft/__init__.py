"""rsft — rejection-sampling fine-tuning experiments.

Draw candidates from a proposal, keep those an acceptance rule accepts, fine-tune a model on the
accepted set, and rebuild that set every epoch.
"""

from rsft.acceptance.base import AcceptAll, Acceptance, AllOf, NonFiniteDensityError, ProbabilisticAcceptance
from rsft.acceptance.density import Ball, DensityRatio, Interval, Region
from rsft.proposals.base import Proposal
from rsft.proposals.distribution import DistributionProposal
from rsft.proposals.model import ModelProposal
from rsft.sampling import AcceptanceBudgetError, SamplingResult, rejection_sample

__version__ = "0.1.0"

__all__ = [
    "AcceptAll",
    "Acceptance",
    "AcceptanceBudgetError",
    "AllOf",
    "Ball",
    "DensityRatio",
    "DistributionProposal",
    "Interval",
    "ModelProposal",
    "NonFiniteDensityError",
    "ProbabilisticAcceptance",
    "Proposal",
    "Region",
    "SamplingResult",
    "rejection_sample",
]
