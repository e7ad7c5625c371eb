"""Tasks: the problem being solved — what candidates mean, how to evaluate, what to plot."""

from rsft.tasks.base import Task
from rsft.tasks.credit import CreditTask
from rsft.tasks.density import DensityTask
from rsft.tasks.sectors import SectorTask

__all__ = ["CreditTask", "DensityTask", "SectorTask", "Task"]
