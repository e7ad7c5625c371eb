"""Tasks: the problem being solved — what candidates mean, how to evaluate, what to plot."""

from rsft.tasks.arithmetic import ArithmeticTask
from rsft.tasks.base import Task
from rsft.tasks.credit import CreditTask
from rsft.tasks.density import DensityTask
from rsft.tasks.reasoning_gym import ReasoningGymTask
from rsft.tasks.sectors import SectorTask

__all__ = ["ArithmeticTask", "CreditTask", "DensityTask", "ReasoningGymTask", "SectorTask", "Task"]
