"""Fair resampling of a training set as acceptance rules (Kamiran & Calders 2012).

Each rule judges rows drawn uniformly with replacement from the training set (``proposal=dataset``:
the batch carries the group ``s`` of the row, its label ``y`` and the row ``index``). The group is a
sensitive attribute (0/1) or any of K groups (several values, or the value tuple of several attributes:
intersectional groups), numbered 0..K-1. The training set's cells (g, y) have sizes |g, y|; independence
of group and label would give them the expected sizes E(g, y) = |g|·|y| / n, i.e. the weights
W(g, y) = P(g) P(y) / P(g, y), for every one of the 2K cells (an empty cell is an error: it has no weight).

- ``reweighing``: accept with probability W(g, y) / max W. Accepted rows are i.i.d. draws of the
  reweighed data, so group and label are independent in them (P(cell) = P(g) P(y); every group's
  statistical parity difference ≈ 0).
- ``uniform_sampling``: the same target, but each chunk keeps fixed quotas per cell proportional
  to E(g, y) (rows within a cell uniform, with replacement): cell sizes without multinomial noise.
- ``preferential_sampling``: the cells get their expected sizes by dropping (over-represented cells)
  or duplicating (under-represented cells) the rows nearest the current model's decision boundary
  first. Each row gets a copy count w ∈ {0, 1, 2, ...}; a row is accepted with probability
  w / max w. On-policy: the ranking is recomputed from the bound model at every sampling round. With
  K groups each group gets the paper's step with its own expected counts.
"""

from __future__ import annotations

from typing import Any

import torch

from rsft.acceptance.base import Acceptance, ProbabilisticAcceptance
from rsft.batch import Batch, field, require_methods, training_rows


class EmptyCellError(ValueError):
    """A (group, label) cell of the training set has no rows."""


#: What a fair-resampling rule needs upstream.
NEEDS_ROWS = "use proposal=dataset with a task that has a sensitive attribute (task=decisions)"


def _require_fields(batch: Batch, rule: str, fields: tuple[str, ...] = ("s", "y")) -> None:
    for name in fields:
        field(batch, name, f"acceptance={rule}", NEEDS_ROWS)


def _labels(y: torch.Tensor) -> torch.Tensor:
    y = y.long()
    if bool(((y != 0) & (y != 1)).any()):
        raise ValueError(
            f"label y must be binary 0/1 for fair resampling, got values {torch.unique(y).tolist()[:10]}; "
            "binarise the label (1 = favourable)"
        )
    return y


def _group_ids(s: torch.Tensor, num_groups: int | None = None) -> torch.Tensor:
    s = s.long()
    low, high = int(s.min()), int(s.max())
    if low < 0 or (num_groups is not None and high >= num_groups):
        limit = "" if num_groups is None else f" below {num_groups}"
        raise ValueError(
            f"sensitive attribute s must hold group ids 0, 1, ...{limit} (0/1 for a binary attribute, "
            f"1 = privileged), got values {torch.unique(s).tolist()[:10]}"
        )
    return s


def group_names(data: Any, num_groups: int) -> tuple[str, ...]:
    """The groups' names for messages: the split's ``groups`` when it has them, else ``s=0``, ``s=1``, ..."""
    names = tuple(getattr(data, "groups", ()) or ())
    return names if len(names) == num_groups else tuple(f"s={g}" for g in range(num_groups))


def cell_counts(s: torch.Tensor, y: torch.Tensor, num_groups: int | None = None) -> torch.Tensor:
    """Counts of rows per cell, a K×2 tensor indexed [group, label] (K = ``num_groups``, default max(s) + 1)."""
    s, y = _group_ids(s, num_groups), _labels(y)
    k = int(s.max()) + 1 if num_groups is None else num_groups
    return torch.bincount(2 * s + y, minlength=2 * k).reshape(k, 2)


def reweighing_weights(
    s: torch.Tensor, y: torch.Tensor, num_groups: int | None = None, names: tuple[str, ...] | None = None
) -> torch.Tensor:
    """W(g, y) = P(g) P(y) / P(g, y) as a float64 K×2 tensor [group, label]; every cell must be non-empty."""
    counts = cell_counts(s, y, num_groups).double()
    if bool((counts == 0).any()):
        names = names or tuple(f"s={g}" for g in range(counts.shape[0]))
        empty = [f"({names[g]}, y={j})" for g, j in (counts == 0).nonzero().tolist()]
        raise EmptyCellError(
            f"the training rows have no examples in the (group, label) cell(s) {', '.join(empty)}: fair resampling "
            "weights every cell, so each needs rows; merge that group with another or drop an attribute from "
            "task.data.sensitive (or use task.data.stratify=true when the cell is small)"
        )
    n = counts.sum()
    expected = counts.sum(1, keepdim=True) * counts.sum(0, keepdim=True) / n  # |g| |y| / n
    return expected / counts


def _training_weights(data: Any, rule: str, fields: tuple[str, ...] = ("s", "y")) -> tuple[Batch, torch.Tensor]:
    """The training rows of ``data`` and their W(g, y) (K = the split's number of groups when it names them)."""
    rows = training_rows(data)
    _require_fields(rows, rule, fields)
    names = tuple(getattr(data, "groups", ()) or ())
    k = len(names) if names else None
    return rows, reweighing_weights(rows["s"], rows["y"], k, group_names(data, k) if k else None)


def reweighing_table(data: Any) -> list[list[float]]:
    """W(g, y) of a split's training rows as a nested list [group][y] (``model=logistic_weighted``'s cell weights)."""
    return _training_weights(data, "reweighing")[1].tolist()


def _same_on_every_process(stats: dict[str, float]) -> dict[str, str]:
    # figures of the whole training split (weights, expected rates), which every process computes alike
    return dict.fromkeys(stats, "mean")


def _weight_stats(weights: torch.Tensor) -> dict[str, float]:
    return {f"rule_weight_s{g}_y{j}": float(weights[g, j]) for g in range(weights.shape[0]) for j in (0, 1)}


class Reweighing(ProbabilisticAcceptance):
    """Accept a row with probability W(g, y) / max W (``acceptance=reweighing``)."""

    def __init__(self, data: Any):
        _, self.weights = _training_weights(data, "reweighing")
        self.log_accept = (self.weights / self.weights.max()).log()

    def to(self, device: torch.device | str) -> Reweighing:
        self.log_accept = self.log_accept.to(device)
        return self

    def log_accept_prob(self, batch: Batch) -> torch.Tensor:
        _require_fields(batch, "reweighing")
        s, y = _group_ids(batch["s"], self.weights.shape[0]), _labels(batch["y"])
        return self.log_accept[s, y].to(torch.float32)

    def stats(self) -> dict[str, float]:
        return {**_weight_stats(self.weights), "rule_expected_acceptance_rate": float(1 / self.weights.max())}

    def stat_combiners(self) -> dict[str, str]:
        return _same_on_every_process(self.stats())


class UniformSampling(Acceptance):
    """Per chunk, keep the largest set whose cell sizes are proportional to E(g, y) (``acceptance=uniform_sampling``).

    The kept q(g, y) rows of each cell are a uniformly random subset of the chunk's rows of that cell,
    spread over the chunk's positions. (Keeping each cell's *first* q rows would make the chunk's first
    rows all kept; the engine trims the last chunk to its first accepted rows, so with ``num_accepted``
    below the chunk size the accepted set was the unfiltered prefix, i.e. ``acceptance=all``.)
    """

    def __init__(self, data: Any):
        rows, self.weights = _training_weights(data, "uniform_sampling")
        counts = cell_counts(rows["s"], rows["y"], self.weights.shape[0]).double()
        self.fractions = (self.weights * counts / counts.sum()).flatten()  # E(g, y) / n, cells in order 2g + y

    def to(self, device: torch.device | str) -> UniformSampling:
        self.fractions = self.fractions.to(device)
        return self

    def accept(self, batch: Batch, generator: torch.Generator) -> torch.Tensor:
        _require_fields(batch, "uniform_sampling")
        cell = 2 * _group_ids(batch["s"], self.weights.shape[0]) + _labels(batch["y"])
        one_hot = torch.nn.functional.one_hot(cell, self.fractions.numel())
        available = one_hot.sum(0).double()
        total = torch.floor((available / self.fractions).min())  # rows kept in this chunk
        quota = torch.floor(total * self.fractions)
        # a random rank within each cell: sort by (cell, uniform key), then count from each cell's start
        keys = cell.double() + torch.rand(cell.shape, generator=generator, device=cell.device, dtype=torch.float64)
        order = torch.argsort(keys)
        starts = torch.cumsum(available, 0) - available
        rank = torch.empty_like(cell)
        rank[order] = torch.arange(cell.numel(), device=cell.device) - starts.long()[cell[order]]
        return rank < quota[cell]

    def stats(self) -> dict[str, float]:
        return {**_weight_stats(self.weights), "rule_expected_acceptance_rate": float(1 / self.weights.max())}

    def stat_combiners(self) -> dict[str, str]:
        return _same_on_every_process(self.stats())


def preferential_copies(
    scores: torch.Tensor,
    s: torch.Tensor,
    y: torch.Tensor,
    num_groups: int | None = None,
    names: tuple[str, ...] | None = None,
) -> torch.Tensor:
    """Kamiran & Calders' preferential sampling as copy counts per training row, group by group.

    ``scores`` are the ranker's probabilities of the favourable label. In each (group, label) cell, rows
    are ranked from the decision boundary outwards (favourable rows by ascending score, unfavourable rows
    by descending score). A cell larger than its expected size E = round(|g||y|/n) drops its
    |cell| − E most borderline rows (copy count 0, others 1); a smaller cell gives every row
    ⌊E/|cell|⌋ copies and one more to its E mod |cell| most borderline rows. With K groups this is the
    paper's two-group promote/demote step applied to each group with its own expected counts.
    """
    counts = cell_counts(s, y, num_groups)
    if bool((counts == 0).any()):
        reweighing_weights(s, y, num_groups, names)  # raises the empty-cell error
    n = int(counts.sum())
    copies = torch.zeros_like(y, dtype=torch.long)
    for si in range(counts.shape[0]):
        for yi in (0, 1):
            members = ((s == si) & (y == yi)).nonzero().squeeze(1)
            m = members.numel()
            expected = int(round(float(counts[si].sum() * counts[:, yi].sum()) / n))
            # borderline first: favourable rows with the lowest scores, unfavourable with the highest
            order = torch.argsort(scores[members], descending=(yi == 0), stable=True)
            rank = torch.empty(m, dtype=torch.long, device=members.device)
            rank[order] = torch.arange(m, device=members.device)
            if expected < m:
                copies[members] = (rank >= m - expected).long()
            else:
                copies[members] = expected // m + (rank < expected % m).long()
    return copies


class PreferentialSampling(ProbabilisticAcceptance):
    """Accept row i with probability copies_i / max copies (``acceptance=preferential_sampling``, on-policy)."""

    def __init__(self, data: Any, score_batch_size: int = 65536):
        rows, weights = _training_weights(data, "preferential_sampling", ("s", "y", "x"))  # fails on an empty cell
        self.num_groups = weights.shape[0]
        self.names = group_names(data, self.num_groups)
        self.rows = {k: rows[k] for k in ("x", "y", "s")}
        self.score_batch_size = int(score_batch_size)
        self.model = None
        self.copies: torch.Tensor | None = None

    def bind(self, model: Any) -> None:
        require_methods(
            model,
            ("predict_proba",),
            who="acceptance=preferential_sampling (it ranks rows by the model's scores)",
            fix="use a tabular classifier (model=logistic or model=mlp_tabular)",
        )
        self.model = model

    def to(self, device: torch.device | str) -> PreferentialSampling:
        self.rows = {k: v.to(device) for k, v in self.rows.items()}
        return self

    @torch.no_grad()
    def start(self) -> None:
        if self.model is None:
            self.copies = None
            return
        x = self.rows["x"]
        scores = torch.cat(
            [
                self.model.predict_proba(x[i : i + self.score_batch_size].to(self.model.device)).to(x.device)
                for i in range(0, x.shape[0], self.score_batch_size)
            ]
        )
        self.copies = preferential_copies(scores, self.rows["s"], self.rows["y"], self.num_groups, self.names)
        self.log_accept = (self.copies.double() / self.copies.max()).log().float()

    def log_accept_prob(self, batch: Batch) -> torch.Tensor:
        if self.copies is None:
            raise RuntimeError(
                "acceptance=preferential_sampling ranks rows by the model being trained; it was used before "
                "bind(model) "
                "(the data module binds the model each round)"
            )
        _require_fields(batch, "preferential_sampling", ("index",))
        return self.log_accept[batch["index"].to(self.log_accept.device)]

    def stats(self) -> dict[str, float]:
        if self.copies is None:
            return {}
        return {
            "rule_rows_dropped": float((self.copies == 0).sum()),
            "rule_rows_duplicated": float((self.copies > 1).sum()),
            "rule_expected_acceptance_rate": float(self.copies.double().mean() / self.copies.max()),
        }

    def stat_combiners(self) -> dict[str, str]:
        return _same_on_every_process(self.stats())
