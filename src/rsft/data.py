"""The LightningDataModule that rebuilds the accepted set every epoch.

Each epoch (``reload_dataloaders_every_n_epochs=1``) ``train_dataloader`` runs the rejection-sampling
engine on the trainer's device, with the current model bound to on-policy proposals and rules. Every
epoch samples from its own stream, derived from (seed, epoch, rank): a resumed run draws exactly
what an uninterrupted one would, and under multi-process training every rank draws its own share of
the accepted set from its own stream.

Under multi-process training the ranks then pool what they accepted and every rank trains on its part
of the pooled set: the same number of optimizer steps on every rank (DDP's gradient all-reduce needs
it), every accepted row used exactly once per pass, none duplicated or dropped, and mini-batches that
differ by at most one row, so each row weighs the same in the averaged gradient. Padding (repeating
rows) would over-weight some accepted samples and trimming would discard some; pooling does neither.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import pytorch_lightning as pl
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from rsft.acceptance.base import Acceptance
from rsft.batch import Batch, num_rows, skipped_round_batch
from rsft.proposals.base import Proposal
from rsft.sampling import ENGINE_STAT_COMBINERS, SamplerSettings, SamplingResult, rejection_sample
from rsft.tasks.base import Task


class RoundObserver(Protocol):
    """Anything told of each sampling round (callbacks and models that report on the accepted set)."""

    def on_round(self, epoch: int, stats: dict[str, float], accepted: Batch) -> None: ...


class EmptyAcceptedSetError(RuntimeError):
    """A sampling round accepted nothing and ``sampler.on_empty=error``."""


class BatchDict(Dataset):
    """A dict of equally long tensors, indexed by a list of row indices (one whole batch per item)."""

    def __init__(self, batch: Batch):
        self.batch = batch
        self.size = next(iter(batch.values())).shape[0] if batch else 0

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, rows: list[int]) -> Batch:
        index = torch.as_tensor(rows, device=next(iter(self.batch.values())).device)
        return {k: v[index] for k, v in self.batch.items()}


def batch_loader(batch: Batch, batch_size: int, shuffle: bool, generator: torch.Generator | None = None) -> DataLoader:
    """Mini-batches of a dict of tensors that stay on their device (no worker processes, no copies)."""
    data = BatchDict(batch)
    # An empty set (a skipped round) has nothing to shuffle; RandomSampler refuses size 0.
    order = RandomSampler(data, generator=generator) if shuffle and len(data) else SequentialSampler(data)
    return DataLoader(data, sampler=BatchSampler(order, batch_size, drop_last=False), batch_size=None, collate_fn=None)


class RejectionSamplingDataModule(pl.LightningDataModule):
    """Rejection-samples a fresh training set every epoch; evaluation sets come from the task."""

    def __init__(
        self,
        proposal: Proposal,
        acceptance: Acceptance,
        task: Task,
        sampler: SamplerSettings | dict[str, Any],
        batch_size: int = 512,
        seed: int = 0,
        run_dir: str | Path | None = None,
        eval_batch_size: int = 4096,
        observers: Sequence[RoundObserver] = (),
    ):
        super().__init__()
        if batch_size <= 0:
            raise ValueError(f"data.batch_size must be positive, got {batch_size}")
        self.proposal = proposal
        self.acceptance = acceptance
        self.task = task
        self.sampler = sampler if isinstance(sampler, SamplerSettings) else SamplerSettings(**sampler)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.seed = int(seed)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        # Told of every round (epoch, its figures over all ranks, this rank's accepted rows): the callbacks and
        # the model that report on it get it handed, instead of reaching into the data module.
        self.observers = list(observers)
        self.last_stats: dict[str, float] = {}
        self.last_accepted: Batch | None = None
        self._val_names: list[str] = []
        # The acceptance rule's state at the start of the latest round (epoch → state): see sample_round.
        self._round_start: tuple[int, dict[str, Any]] | None = None

    # -- where and who -------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        if self.trainer is not None:
            return self.trainer.strategy.root_device
        return torch.device("cpu")

    @property
    def rank(self) -> tuple[int, int]:
        if self.trainer is not None:
            return self.trainer.global_rank, self.trainer.world_size
        return 0, 1

    def generator(self, epoch: int, purpose: str = "sampling") -> torch.Generator:
        """The random stream of one (epoch, rank, purpose), derived from the run's seed.

        Each epoch gets its own stream instead of continuing one long stream: a resumed run, or
        Lightning calling ``train_dataloader`` again for an epoch it restarts, draws exactly what the
        uninterrupted run drew, with no generator state to carry between processes or ranks.
        """
        rank, _ = self.rank
        return torch.Generator(self.device).manual_seed(stream_seed(self.seed, epoch, rank, purpose))

    def share(self, total: int | None, key: str, group: int = 1) -> int | None:
        """This rank's part of ``total``, in whole groups of ``group`` (parts differ by at most one group)."""
        if total is None:
            return None
        rank, world = self.rank
        if total % group:
            raise ValueError(
                f"{key}={total} is not a multiple of the proposal's group size {group} (proposal.k): the "
                "samples of one prompt must be drawn together"
            )
        groups = total // group
        if groups < world:
            raise ValueError(
                f"{key}={total} is less than one {'group of ' + str(group) if group > 1 else 'row'} for each of the "
                f"{world} processes: raise {key} to at least {world * group} or run on fewer devices (trainer.devices)"
            )
        return (groups // world + (1 if rank < groups % world else 0)) * group

    # -- one sampling round --------------------------------------------------------------
    def sample_round(self, model: Any = None, epoch: int = 0) -> SamplingResult:
        """Run the engine once with the current model bound; annotate what was accepted."""
        if model is not None:
            self.proposal.bind(model)
            self.acceptance.bind(model)
        # A rule that carries state from round to round (the tempered one: β, the envelope) starts an epoch's
        # round from the state that epoch's first round started from: Lightning asks for a round again when it
        # restarts an epoch (and, on resume, first for the checkpoint's finished epoch, then the next).
        rank, world = self.rank
        if world > 1 and self.acceptance.state_dict():
            # Its β and envelope come from each process's own candidates: ranks would choose differently and
            # pool rows drawn under different rules (tempered ones among "exact" ones).
            raise ValueError(
                f"{type(self.acceptance).__name__} carries its choices (β, the envelope) from round to round, made "
                f"on each process's own candidates, which {world} processes would not share: run it on one process "
                "(trainer.devices=1), or use an acceptance rule without round-to-round state"
            )
        if self._round_start is not None and self._round_start[0] == epoch:
            self.acceptance.load_state_dict(self._round_start[1])
        elif self._round_start is None or epoch > self._round_start[0]:
            self._round_start = (epoch, self.acceptance.state_dict())
        # The round's seed is the same on every rank: a proposal that divides fixed items (prompts) between
        # ranks draws one order they all agree on.
        self.proposal.split_round(stream_seed(self.seed, epoch, 0, "round"), rank, world)
        s = self.sampler
        result = rejection_sample(
            self.proposal,
            self.acceptance,
            num_accepted=self.share(s.num_accepted, "sampler.num_accepted") if s.num_proposals is None else None,
            num_proposals=self.share(s.num_proposals, "sampler.num_proposals", self.proposal.group_size),
            chunk_size=s.chunk_size,
            max_proposals=s.max_proposals,
            allow_partial=s.allow_partial,
            fail_fast=s.fail_fast,
            generator=self.generator(epoch),
            count=s.count,  # rows, or whole prompt groups (each rank keeps its share of the groups)
        )
        result.batch = self.task.annotate(result.batch)
        # Proposals that know more about the round (e.g. an LM policy: correct rate, distinct paths)
        # add their figures; they are logged and quoted when a round accepts nothing.
        result.stats.update(self.proposal.round_stats(result.batch))
        return result

    def train_dataloader(self) -> DataLoader:
        """Sample this epoch's round, tell the observers, and serve this rank's mini-batches of its training set."""
        model = self.trainer.lightning_module if self.trainer is not None else None
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        was_training = model.training if model is not None else False
        if model is not None:
            model.eval()  # sampling from the model: no dropout, no batch-norm updates
        try:
            result = self.sample_round(model, epoch)
        finally:
            if model is not None:
                model.train(was_training)
        self.last_stats = {"epoch": epoch, **self.all_ranks(result.stats)}
        self.last_accepted = result.batch
        for observer in self.observers:
            observer.on_round(epoch, self.last_stats, result.batch)
        self.save_accepted(result.batch, epoch)
        return self.loader(self.training_set(result.batch, epoch), epoch)

    def training_set(self, accepted: Batch, epoch: int) -> Batch:
        """The round's training rows: what every rank accepted (pooled), extended by the proposal (gold rows);
        a round that accepted nothing raises or is skipped (``sampler.on_empty``)."""
        _, world = self.rank
        # Every rank goes on with the round's whole accepted set (pooled over ranks), so every rank takes the
        # same decisions below and trains on its part of the same set.
        pooled = self.pool_ranks(accepted) if world > 1 else accepted
        # A proposal may extend the round's training set (e.g. mix in gold SFT rows): once, on the pooled set.
        rows = self.proposal.training_rows(pooled)
        if num_rows(pooled) == 0:
            self._empty_round(epoch, num_rows(rows))
        return rows

    def _empty_round(self, epoch: int, extra_rows: int) -> None:
        message = (
            f"epoch {epoch}: the sampling round accepted nothing "
            f"({int(self.last_stats['proposals_drawn']):,} candidates drawn). Stats: {_short(self.last_stats)}"
        )
        if self.sampler.on_empty == "error":
            raise EmptyAcceptedSetError(
                message + ". Loosen the acceptance rule, raise sampler.num_proposals, or set "
                "sampler.on_empty=skip to skip such rounds with a warning"
            )
        action = (
            f"training on the proposal's {extra_rows:,} extra rows only"
            if extra_rows
            else "skipping this epoch's training"
        )
        warnings.warn(f"{message}; {action} (sampler.on_empty=skip)", stacklevel=3)

    def save_accepted(self, accepted: Batch, epoch: int) -> None:
        """``sampler.save_accepted``: this rank's accepted rows as ``accepted/epoch_XXX[_rankR].pt``."""
        if not self.sampler.save_accepted or self.run_dir is None:
            return
        rank, world = self.rank
        suffix = f"_rank{rank}" if world > 1 else ""
        out = self.run_dir / "accepted" / f"epoch_{epoch:03d}{suffix}.pt"
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu() for k, v in accepted.items()}, out)

    def loader(self, rows: Batch, epoch: int) -> DataLoader:
        """This rank's shuffled mini-batches of the round's training rows (its part of them under several ranks)."""
        rank, world = self.rank
        if world > 1:
            # One order of the pooled rows that every rank draws alike; each rank takes its part of every step.
            order = torch.Generator().manual_seed(stream_seed(self.seed, epoch, 0, "shuffle"))
            parts = rank_steps(num_rows(rows), world, self.batch_size, rank, order)
            if not parts:
                if num_rows(rows):
                    warnings.warn(
                        f"epoch {epoch}: the round has {num_rows(rows)} training rows for {world} processes, fewer "
                        "than one each; skipping this epoch's training on every rank (every rank must take the same "
                        "steps). Raise sampler.num_proposals or loosen the acceptance rule",
                        stacklevel=3,
                    )
                return batch_loader(skipped_round_batch(self.device), self.batch_size, shuffle=False)
            return DataLoader(BatchDict(rows), sampler=parts, batch_size=None, collate_fn=None)
        if num_rows(rows) == 0:  # a skipped round (on_empty=skip; on_empty=error raised above)
            rows = skipped_round_batch(self.device)
        # Shuffle order from (seed, epoch, rank) too (a CPU generator: the sampler of indices runs there).
        order = torch.Generator().manual_seed(stream_seed(self.seed, epoch, rank, "shuffle"))
        return batch_loader(rows, self.batch_size, shuffle=True, generator=order)

    def val_dataloader(self) -> list[DataLoader]:
        sets = self.task.validation_sets(self.device)
        self._val_names = list(sets)
        return [batch_loader(batch, self.eval_batch_size, shuffle=False) for batch in sets.values()]

    # -- checkpointing -------------------------------------------------------------------
    def all_ranks(self, stats: dict[str, Any]) -> dict[str, Any]:
        """This round's figures over all ranks, each combined as its owner declares (counts summed, envelopes
        the largest, rates recomputed); the rank's own with one."""
        _, world = self.rank
        if world == 1:
            return stats
        keys = sorted(k for k, v in stats.items() if isinstance(v, (int, float)) and k != "partial")
        local = torch.tensor([float(stats[k]) for k in keys] + [float(stats.get("partial", 0))], dtype=torch.float64)
        gathered = self.trainer.strategy.all_gather(local.to(self.device)).reshape(world, -1).cpu()
        per_rank = [dict(zip([*keys, "partial"], row.tolist())) for row in gathered]
        return {**stats, **combine_rank_stats(per_rank, self.stat_combiners())}

    def stat_combiners(self) -> dict[str, str]:
        """How every figure of a round combines over ranks, as the engine, the rule and the proposal declare."""
        return {
            **ENGINE_STAT_COMBINERS,
            **self.acceptance.stat_combiners(),
            **self.proposal.stat_combiners(),
            "_owners": f"{type(self.acceptance).__name__}.stat_combiners() or {type(self.proposal).__name__}"
            ".stat_combiners()",
        }

    def pool_ranks(self, batch: Batch) -> Batch:
        """The rows every rank accepted this round, in rank order, on every rank (an all-gather)."""
        _, world = self.rank
        layout = {key: (value.dtype, tuple(value.shape[1:])) for key, value in batch.items()}
        meta: list[Any] = [None] * world
        torch.distributed.all_gather_object(meta, (num_rows(batch), layout))
        counts = [n for n, _ in meta]
        layouts = [lay for n, lay in meta if n] or [layout]
        if any(lay != layouts[0] for lay in layouts):
            raise ValueError(f"the ranks accepted rows of different layouts (fields, dtypes, shapes): {layouts}")
        layout, longest = layouts[0], max(counts)
        pooled: Batch = {}
        for key, (dtype, shape) in layout.items():
            local = batch[key] if counts[self.rank[0]] else torch.zeros(0, *shape, dtype=dtype, device=self.device)
            # all_gather needs equal shapes: pad every rank's rows to the longest; bool travels as uint8 (gloo).
            wire = local.to(torch.uint8) if dtype == torch.bool else local
            padded = torch.zeros(longest, *shape, dtype=wire.dtype, device=self.device)
            padded[: len(wire)] = wire
            gathered = self.trainer.strategy.all_gather(padded)
            pooled[key] = torch.cat([gathered[r, :n] for r, n in enumerate(counts)]).to(dtype)
        return pooled

    def state_dict(self) -> dict[str, Any]:
        # The sampling streams are a function of (seed, epoch, rank); the epoch is in Lightning's own
        # loop state, so the seed is all the checkpoint needs to continue exactly -- plus what the proposal
        # and the acceptance rule keep across rounds (policy=frozen: the snapshot it samples from; the
        # tempered rule: β and the carried envelope).
        return {
            "seed": self.seed,
            "streams": "per-epoch-v1",
            "proposal": self.proposal.state_dict(),
            # what the latest round left the rule: the state the next epoch's round starts from
            "acceptance": {"epoch": self.last_stats.get("epoch", -1) + 1, "state": self.acceptance.state_dict()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(
                f"the checkpoint was written by a run with seed={state['seed']} but this run has seed={self.seed}; "
                "resume with the same seed"
            )
        self.proposal.load_state_dict(state.get("proposal", {}))
        if "acceptance" in state:
            saved = state["acceptance"]
            self.acceptance.load_state_dict(saved["state"])
            self._round_start = (saved["epoch"], saved["state"])


def rank_steps(n: int, world: int, batch_size: int, rank: int, generator: torch.Generator) -> list[list[int]]:
    """Rank ``rank``'s mini-batches (row indices) of ``n`` pooled rows: every rank gets the same number of steps.

    One permutation (``generator``, the same on every rank) is cut into ``steps × world`` parts whose sizes
    differ by at most one; step ``s`` of rank ``r`` is part ``s × world + r``. ``steps`` is the fewest that keep
    parts within ``batch_size``, but never more than ``n // world`` (every part holds a row). So every row is
    used once, no rank idles, and no part exceeds ``batch_size`` unless ``batch_size=1`` and ``world`` does not
    divide ``n``. Fewer rows than ranks: no steps at all (an empty list on every rank).
    """
    steps = min(math.ceil(n / (world * batch_size)), n // world)
    if steps == 0:
        return []
    order = torch.randperm(n, generator=generator).tolist()
    parts = steps * world
    bounds = [j * n // parts for j in range(parts + 1)]
    return [order[bounds[s * world + rank] : bounds[s * world + rank + 1]] for s in range(steps)]


def stream_seed(seed: int, epoch: int, rank: int, purpose: str) -> int:
    """A 63-bit seed for one (seed, epoch, rank, purpose), well mixed so that streams never coincide."""
    digest = hashlib.sha256(f"rsft/{purpose}/{seed}/{epoch}/{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


COMBINE = {"sum": sum, "mean": lambda values: sum(values) / len(values), "max": max, "min": min}


def combine_rank_stats(per_rank: list[dict[str, float]], combiners: dict[str, str]) -> dict[str, float]:
    """One round's figures over all ranks, each as ``combiners`` declares; the rates recomputed from the totals.

    A figure without a declaration is refused (naming where to declare it, ``combiners["_owners"]``): averaged
    by default, a new count would read as one process's share."""
    out: dict[str, float] = {}
    for key in per_rank[0]:
        how = combiners.get(key)
        if how not in COMBINE:
            where = combiners.get("_owners", "the stat_combiners() of the rule or the proposal that reports it")
            raise ValueError(
                f"the round's figure {key!r} has no declared way to combine over processes ({how!r}): declare it as "
                f"'sum', 'mean', 'max' or 'min' in {where}"
            )
        values = [stats[key] for stats in per_rank]
        known = [v for v in values if not math.isnan(v)]  # NaN: a rank had no estimate yet
        out[key] = float(COMBINE[how](known)) if known else float("nan")
    if "accepted" in out and "proposals" in out:
        out["acceptance_rate"] = out["accepted"] / out["proposals"] if out["proposals"] else float("nan")
    if out.get("seconds", 0) > 0:
        if "proposals_per_s" in out and "proposals_drawn" in out:
            out["proposals_per_s"] = out["proposals_drawn"] / out["seconds"]
        if "accepted_per_s" in out and "accepted" in out:
            out["accepted_per_s"] = out["accepted"] / out["seconds"]
    return out


def _short(stats: dict[str, float]) -> str:
    keys = ("proposals", "accepted", "acceptance_rate", "log_M", "envelope_violations")
    keys += tuple(k for k in stats if k.startswith(("round_", "rule")))
    return ", ".join(
        f"{k}={stats[k]:.4g}" if isinstance(stats[k], float) else f"{k}={stats[k]}" for k in keys if k in stats
    )
