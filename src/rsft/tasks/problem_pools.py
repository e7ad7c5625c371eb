"""Verifiable problems in disjoint, seeded pools: the scaffolding ``task=arithmetic`` and
``task=reasoning_gym`` share.

Problem ids are global: the ``sft`` pool first, then ``answer_only``, then ``test``; ``both`` is the two
training pools together. Evaluation serves ``test`` (held out) and ``train`` (the first
``num_train_eval`` ``sft`` problems, for the generalisation gap).
"""

from __future__ import annotations

import hashlib

import torch

from rsft.batch import Batch
from rsft.tasks.base import Task

POOLS = ("sft", "answer_only", "test")
_POOL_KEYS = {"sft": "task.num_sft", "answer_only": "task.num_answer_only"}


def path_hash(path: str) -> int:
    """A stable signed 64-bit hash of a string (Python's str hash is salted per process)."""
    return int.from_bytes(hashlib.blake2b(path.encode(), digest_size=8).digest(), "little", signed=True)


def check_counts(**counts: int) -> None:
    """Each ``task.<key>`` count is a non-negative integer, and the held-out ``num_eval`` is positive."""
    for key, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"task.{key} must be a non-negative integer, got {value!r}")
    if counts.get("num_eval") == 0:
        raise ValueError("task.num_eval must be positive: the held-out test set is how runs are compared")


class ProblemPoolTask(Task):
    """A task whose problems are numbered and split into the pools above. Subclasses call
    :meth:`_set_pools` once their problems exist and implement ``prompts``/``score``/``answers``."""

    #: Evaluation splits served by :meth:`validation_sets`, in dataloader order.
    split_names = ("test", "train")

    def _set_pools(self, num_sft: int, num_answer_only: int, num_eval: int, num_train_eval: int) -> None:
        self.pools: dict[str, torch.Tensor] = {}
        start = 0
        for pool, size in zip(POOLS, (num_sft, num_answer_only, num_eval)):
            self.pools[pool] = torch.arange(start, start + size)
            start += size
        self.num_problems = start
        self.pools["both"] = torch.cat([self.pools["sft"], self.pools["answer_only"]])
        self.num_train_eval = min(num_train_eval, num_sft)

    def pool(self, name: str) -> torch.Tensor:
        """Problem ids of a training pool (``sft``, ``answer_only``, ``both``) or ``test``."""
        if name not in self.pools:
            raise ValueError(f"unknown problem pool {name!r}; choose one of {sorted(self.pools)} (proposal.pool)")
        ids = self.pools[name]
        if ids.numel() == 0:
            key = _POOL_KEYS.get(name, "task.num_sft / task.num_answer_only")
            raise ValueError(f"the {name!r} problem pool is empty; set {key} > 0")
        return ids

    def _check_id(self, i: int) -> int:
        if not 0 <= i < self.num_problems:
            raise IndexError(f"problem id {i} is out of range (the task has {self.num_problems} problems)")
        return i

    def validation_sets(self, device: torch.device) -> dict[str, Batch]:
        """``test``: the held-out pool; ``train``: the first ``num_train_eval`` ``sft`` problems (for the gap)."""
        sets = {"test": self.pools["test"]}
        if self.num_train_eval > 0:
            sets["train"] = self.pools["sft"][: self.num_train_eval]
        return {
            name: {"prompt_id": ids.to(device), "split": torch.full_like(ids, self.split_names.index(name)).to(device)}
            for name, ids in sets.items()
        }
