"""Tasks: the problem being solved — what candidates mean, how to evaluate, what to plot."""

from rsft.tasks.arithmetic import ArithmeticTask
from rsft.tasks.base import Task
from rsft.tasks.decisions import DecisionTask
from rsft.tasks.density import DensityTask
from rsft.tasks.reasoning_gym import ReasoningGymTask
from rsft.tasks.sectors import SectorTask

__all__ = ["ArithmeticTask", "DecisionTask", "DensityTask", "ReasoningGymTask", "SectorTask", "Task"]
