"""Acceptance rules for language-model samples (the fields ``proposal=policy`` writes).

Per-candidate rules look at one row: ``Verifier`` (final answer correct, optionally every equation
too), ``RewardThreshold``, ``Boltzmann`` (a :class:`ProbabilisticAcceptance`). Group rules look at
the k samples of one prompt, which the proposal keeps inside one chunk: ``BestOfN`` (top-1 by
reward), ``ZeroVarianceFilter`` (drop groups whose rewards are all equal: all right or all wrong),
``PassRateBand`` (keep groups whose pass rate lies in a band: DAPO's dynamic sampling).
Round rules keep state from ``start()`` across the chunks of one sampling round: ``MaxPerPrompt``
(at most m kept per prompt, ReST-EM) and ``Dedup`` (one sample per distinct reasoning path per
prompt, RFT). Compose them with :class:`rsft.acceptance.base.AllOf` (``acceptance=all_of``).
"""

from __future__ import annotations

import torch

from rsft.acceptance.base import Acceptance, ProbabilisticAcceptance
from rsft.batch import Batch, field

#: What a rule that reads completions' fields needs upstream.
NEEDS_POLICY = "use proposal=policy with a task that scores completions (task=arithmetic, reasoning_gym or prompts)"


def _group_index(batch: Batch, rule: str) -> tuple[torch.Tensor, int]:
    """Dense 0..G-1 group index of each row (groups are the k samples of one prompt in this chunk)."""
    groups = field(batch, "group", f"acceptance={rule}", NEEDS_POLICY)
    unique, inverse = torch.unique(groups, return_inverse=True)
    return inverse, len(unique)


def _group_max(values: torch.Tensor, index: torch.Tensor, count: int) -> torch.Tensor:
    out = torch.full((count,), float("-inf"), dtype=values.dtype, device=values.device)
    return out.scatter_reduce(0, index, values, reduce="amax")


class Verifier(Acceptance):
    """Keep samples the verifier judged correct (``require_equations``: and every equation a valid step)."""

    def __init__(self, require_equations: bool = False):
        self.require_equations = bool(require_equations)

    def accept(self, batch: Batch, generator: torch.Generator) -> torch.Tensor:
        keep = field(batch, "correct", "acceptance=verifier", NEEDS_POLICY).bool()
        if self.require_equations:
            keep = keep & field(batch, "equations_ok", "acceptance=verifier", NEEDS_POLICY).bool()
        return keep


class RewardThreshold(Acceptance):
    """Keep samples whose reward is at least ``threshold``."""

    def __init__(self, threshold: float):
        self.threshold = float(threshold)

    def accept(self, batch: Batch, generator: torch.Generator) -> torch.Tensor:
        return field(batch, "reward", "acceptance=reward_threshold", NEEDS_POLICY) >= self.threshold


class BestOfN(Acceptance):
    """Keep the highest-reward sample of each prompt's group (Llama-2 style best-of-n).

    Ties are broken uniformly at random (with the engine's generator), so with a constant reward the
    kept sample is a uniform draw from the group.
    """

    def accept(self, batch: Batch, generator: torch.Generator) -> torch.Tensor:
        reward = field(batch, "reward", "acceptance=best_of_n", NEEDS_POLICY).double()
        index, count = _group_index(batch, "best_of_n")
        # A random tie-breaker below the reward's resolution: rank by (reward, u).
        u = torch.rand(reward.shape, generator=generator, device=reward.device, dtype=torch.float64)
        best = _group_max(reward, index, count)
        top = reward == best[index]
        score = torch.where(top, u, torch.full_like(u, -1.0))
        winner = _group_max(score, index, count)
        return top & (score == winner[index])


class ZeroVarianceFilter(Acceptance):
    """Drop every prompt whose samples all got the same reward (all right or all wrong: no signal)."""

    def start(self) -> None:
        self.groups_seen = 0
        self.groups_dropped = 0

    def __init__(self) -> None:
        self.start()

    def accept(self, batch: Batch, generator: torch.Generator) -> torch.Tensor:
        reward = field(batch, "reward", "acceptance=zero_variance", NEEDS_POLICY).double()
        index, count = _group_index(batch, "zero_variance")
        high = _group_max(reward, index, count)
        low = -_group_max(-reward, index, count)
        varied = high > low
        self.groups_seen += count
        self.groups_dropped += int((~varied).sum())
        return varied[index]

    def stats(self) -> dict[str, float]:
        return {"groups_seen": self.groups_seen, "groups_dropped": self.groups_dropped}

    def stat_combiners(self) -> dict[str, str]:
        return {"groups_seen": "sum", "groups_dropped": "sum"}


class PassRateBand(Acceptance):
    """Keep a prompt's whole group when its pass rate (the share of its k samples the verifier marks correct) lies
    in the band (``acceptance=pass_rate_band``): DAPO's dynamic sampling, with the band configurable.

    ``strict`` (default): low < rate < high, so the defaults (0, 1) drop the groups that are all wrong or all
    right — the ones that give a group-relative method no signal. ``strict=false``: low ≤ rate ≤ high. Every
    group's pass rate is counted, kept or not (``pass_rate_<c>_of_<k>``: groups with c of k correct), so a round
    shows what the band cut; with ``sampler.count=groups`` the round draws prompts until enough groups are kept.
    """

    def __init__(self, low: float = 0.0, high: float = 1.0, strict: bool = True):
        low, high = float(low), float(high)
        if not (0.0 <= low <= 1.0 and 0.0 <= high <= 1.0):
            raise ValueError(f"acceptance.low and acceptance.high must be pass rates in [0, 1], got {low}, {high}")
        if low > high or (strict and low == high):
            raise ValueError(
                f"acceptance.low={low} and acceptance.high={high} leave no pass rate in the band "
                f"({'low < rate < high' if strict else 'low ≤ rate ≤ high'}): set acceptance.low below acceptance.high"
            )
        self.low, self.high, self.strict = low, high, bool(strict)
        self.start()

    def start(self) -> None:
        self.groups_seen = 0
        self.groups_kept = 0
        self.histogram: dict[tuple[int, int], int] = {}  # (correct, group size) → groups

    def in_band(self, rate: torch.Tensor) -> torch.Tensor:
        if self.strict:
            return (rate > self.low) & (rate < self.high)
        return (rate >= self.low) & (rate <= self.high)

    def accept(self, batch: Batch, generator: torch.Generator) -> torch.Tensor:
        correct = field(batch, "correct", "acceptance=pass_rate_band", NEEDS_POLICY).long()
        index, count = _group_index(batch, "pass_rate_band")
        hits = torch.zeros(count, dtype=torch.long, device=correct.device).index_add_(0, index, correct)
        sizes = torch.bincount(index, minlength=count)
        keep = self.in_band(hits.double() / sizes.double())
        self.groups_seen += count
        self.groups_kept += int(keep.sum())
        pairs, tally = torch.unique(torch.stack([hits, sizes], dim=1), dim=0, return_counts=True)
        for (c, k), n in zip(pairs.tolist(), tally.tolist()):
            self.histogram[(c, k)] = self.histogram.get((c, k), 0) + n
        return keep[index]

    def stats(self) -> dict[str, float]:
        hist = {f"pass_rate_{c}_of_{k}": float(n) for (c, k), n in sorted(self.histogram.items())}
        return {"groups_seen": float(self.groups_seen), "groups_kept": float(self.groups_kept), **hist}

    def stat_combiners(self) -> dict[str, str]:
        return dict.fromkeys(self.stats(), "sum")

    def budget_hint(self) -> str:
        """What the engine's budget error adds: the band and the pass rates the round saw."""
        seen = ", ".join(f"{c}/{k}: {n}" for (c, k), n in sorted(self.histogram.items())) or "none yet"
        band = f"{self.low:g} < rate < {self.high:g}" if self.strict else f"{self.low:g} ≤ rate ≤ {self.high:g}"
        return (
            f"acceptance=pass_rate_band keeps groups with {band}; groups by correct samples so far: {seen}. Widen the "
            "band (acceptance.low / acceptance.high), use an easier prompt pool, or raise sampler.max_proposals"
        )


class Boltzmann(ProbabilisticAcceptance):
    """Accept with probability exp((r − r_max) / β), r_max the best reward of the sample's prompt group."""

    def __init__(self, beta: float):
        if not beta > 0:
            raise ValueError(f"acceptance.beta must be positive, got {beta}")
        self.beta = float(beta)

    def log_accept_prob(self, batch: Batch) -> torch.Tensor:
        reward = field(batch, "reward", "acceptance=boltzmann", NEEDS_POLICY).double()
        index, count = _group_index(batch, "boltzmann")
        return ((reward - _group_max(reward, index, count)[index]) / self.beta).clamp(max=0.0)


class MaxPerPrompt(Acceptance):
    """Keep at most ``max_per_prompt`` samples of each prompt over a whole round (ReST-EM keeps 10).

    Which samples of a prompt fill its quota is random (the engine's generator), not "the first ones".
    """

    def __init__(self, max_per_prompt: int = 10):
        if isinstance(max_per_prompt, bool) or not isinstance(max_per_prompt, int) or max_per_prompt <= 0:
            raise ValueError(f"acceptance.max_per_prompt must be a positive integer, got {max_per_prompt!r}")
        self.max_per_prompt = max_per_prompt
        self.start()

    def start(self) -> None:
        self.kept: dict[int, int] = {}
        self.capped = 0

    def accept(self, batch: Batch, generator: torch.Generator) -> torch.Tensor:
        prompt = field(batch, "prompt_id", "acceptance=max_per_prompt", NEEDS_POLICY)
        n = prompt.shape[0]
        if n == 0:
            return torch.zeros(0, dtype=torch.bool, device=prompt.device)
        # Random order, then stable sort by prompt: the rank of a row among its prompt's rows is random.
        shuffle = torch.randperm(n, generator=generator, device=generator.device).to(prompt.device)
        order = shuffle[torch.sort(prompt[shuffle], stable=True).indices]
        sorted_prompt = prompt[order]
        unique, counts = torch.unique_consecutive(sorted_prompt, return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(n, device=prompt.device) - starts.repeat_interleave(counts)
        already = torch.tensor([self.kept.get(int(p), 0) for p in unique.tolist()], device=prompt.device)
        room = (self.max_per_prompt - already).clamp(min=0)
        keep_sorted = rank < room.repeat_interleave(counts)
        for p, c, r in zip(unique.tolist(), counts.tolist(), room.tolist()):
            self.kept[p] = self.kept.get(p, 0) + min(c, r)
        self.capped += int((~keep_sorted).sum())
        mask = torch.zeros(n, dtype=torch.bool, device=prompt.device)
        mask[order] = keep_sorted
        return mask

    def stats(self) -> dict[str, float]:
        return {"capped": self.capped}

    def stat_combiners(self) -> dict[str, str]:
        return {"capped": "sum"}


class Dedup(Acceptance):
    """Keep the first sample of each distinct reasoning path per prompt, over the whole round (RFT).

    Paths are compared by ``path_hash`` (the task hashes the sequence of equations). Gold rows mixed in
    later are not seen here, so a sampled path equal to the gold one is kept (as in RFT, which adds
    sampled paths to the SFT data).
    """

    def __init__(self) -> None:
        self.start()

    def start(self) -> None:
        self.seen: set[tuple[int, int]] = set()
        self.duplicates = 0

    def accept(self, batch: Batch, generator: torch.Generator) -> torch.Tensor:
        prompt = field(batch, "prompt_id", "acceptance=dedup", NEEDS_POLICY)
        path = field(batch, "path_hash", "acceptance=dedup", NEEDS_POLICY)
        n = prompt.shape[0]
        mask = torch.zeros(n, dtype=torch.bool, device=prompt.device)
        if n == 0:
            return mask
        keys = torch.stack([prompt, path], dim=1)
        unique, inverse = torch.unique(keys, dim=0, return_inverse=True)
        # First row of each distinct key in this chunk.
        first = torch.full((len(unique),), n, dtype=torch.long, device=prompt.device)
        first = first.scatter_reduce(0, inverse, torch.arange(n, device=prompt.device), reduce="amin")
        for key, row in zip(map(tuple, unique.tolist()), first.tolist()):
            if key not in self.seen:
                self.seen.add(key)
                mask[row] = True
        self.duplicates += n - int(mask.sum())
        return mask

    def stats(self) -> dict[str, float]:
        return {"duplicates": self.duplicates, "distinct_paths": len(self.seen)}

    def stat_combiners(self) -> dict[str, str]:
        # every prompt lives on one process: its distinct paths are counted there only
        return {"duplicates": "sum", "distinct_paths": "sum"}
