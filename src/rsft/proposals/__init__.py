"""Proposals: things that draw a batch of candidates (the ``proposal/`` config group).

One module per option family of ``conf/proposal/``:

- :mod:`~rsft.proposals.base`: the :class:`Proposal` interface and its hooks;
- :mod:`~rsft.proposals.distribution`: ``gaussian``, ``student_t``, ``uniform`` (any ``torch.distributions``);
- :mod:`~rsft.proposals.model`: ``model``, the model being fine-tuned plus a defensive component (on-policy);
- :mod:`~rsft.proposals.dataset`: ``dataset``, rows of a training set;
- :mod:`~rsft.proposals.generator`: ``generator``, a GAN's generator;
- :mod:`~rsft.proposals.policy`: ``policy``, k language-model completions per prompt.
"""

from rsft.proposals.base import Proposal
from rsft.proposals.distribution import DistributionProposal
from rsft.proposals.model import ModelProposal

__all__ = ["DistributionProposal", "ModelProposal", "Proposal"]
