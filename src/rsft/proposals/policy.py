"""``proposal=policy``: k completions per prompt from a language model, scored by the task's verifier.

Each call ``sample(n)`` takes the next ``n / k`` prompts of the round's pool (a fresh seeded
permutation every round) and returns their ``k`` completions as consecutive rows, so the *group* of
one prompt never straddles two chunks: group rules (best-of-n, Boltzmann, the zero-variance filter)
see whole groups. Under multi-process training the round's permutation is drawn from a stream every
rank shares (:meth:`split_round`), and rank ``r`` of ``w`` owns the prompts at positions ``r, r + w,
...``: each prompt lives on one rank, so it gets exactly k samples per round over all ranks, and round
rules (dedup, max-per-prompt) see every sample of it.

Run the engine in ``num_proposals`` mode with ``num_proposals = prompts × k``
(``conf/proposal/policy.yaml`` derives both ``sampler.num_proposals`` and ``sampler.chunk_size``):
every prompt gets exactly k samples per round, which is what RFT / STaR / ReST-EM mean by a round.

Candidate rows: ``prompt_id``, ``group`` (unique within the round), ``tokens`` / ``loss_mask`` (the
training row), ``length``, ``finished``, ``log_prob`` (model, temperature 1), ``log_q`` (the sampling
distribution), and the verifier's ``reward``, ``correct``, ``equations_ok``, ``has_answer``,
``answer``, ``path_hash``. A completion that hit the token limit without eos is never correct.

``policy=current`` samples from the model being trained (on-policy: STaR, ReST-EM); ``policy=frozen``
from a snapshot taken when the proposal is first bound (RFT: all rounds sample the SFT model). The
snapshot is part of :meth:`state_dict`, which the data module puts in the checkpoint: a resumed run
keeps sampling the SFT model.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from rsft.batch import Batch, require_methods
from rsft.proposals.base import Proposal


class GoldProposal(Proposal):
    """Gold chain-of-thought rows of the SFT pool (uniform with replacement): for SFT pre-training."""

    def __init__(self, task: Any, model: Any):
        self.task = task
        self.model = model
        self.ids = task.pool("sft")

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        pick = torch.randint(len(self.ids), (n,), generator=generator, device=generator.device).cpu()
        return gold_rows(self.task, self.model, self.ids[pick])


def gold_rows(task: Any, model: Any, ids: torch.Tensor) -> Batch:
    """Training rows for the gold completions of ``ids``, with the candidate fields of a correct sample."""
    rows = model.encode_examples(task.prompts(ids), task.gold_completions(ids))
    n, dev = len(ids), rows["tokens"].device
    ids = ids.to(dev)
    answers = task.answers(ids)
    return {
        "prompt_id": ids,
        "group": torch.full((n,), -1, dtype=torch.long, device=dev),
        **rows,
        "length": rows["loss_mask"].sum(1),
        "finished": torch.ones(n, dtype=torch.bool, device=dev),
        "log_prob": torch.zeros(n, dtype=torch.float64, device=dev),
        "log_q": torch.zeros(n, dtype=torch.float64, device=dev),
        "reward": torch.ones(n, dtype=torch.float32, device=dev),
        "correct": torch.ones(n, dtype=torch.bool, device=dev),
        "equations_ok": torch.ones(n, dtype=torch.bool, device=dev),
        "has_answer": torch.ones(n, dtype=torch.bool, device=dev),
        "answer": answers,
        "path_hash": torch.zeros(n, dtype=torch.long, device=dev),
    }


class PolicyProposal(Proposal):
    """k completions per prompt from the model (current or frozen), verified by the task.

    ``prompts_per_round`` is the round size the config derives ``sampler.num_proposals`` from (prompts ×
    k); a round takes the first that many prompts of a fresh permutation of ``pool`` (all of it by
    default). If the engine asks for more (``num_accepted`` mode), prompts come round again in a new
    order. ``chunk_prompts`` prompts are generated at once (peak memory). ``mix_gold`` adds the gold
    SFT rows to every round's training set; ``passes_per_round`` repeats the round's set.
    """

    on_policy = True
    group_size: int  # k: the samples of one prompt stay on one rank

    def __init__(
        self,
        task: Any,
        k: int = 4,
        pool: str = "sft",
        prompts_per_round: int | None = None,
        chunk_prompts: int = 64,
        policy: str = "current",
        temperature: float = 0.7,
        top_k: int = 0,
        top_p: float = 1.0,
        max_new_tokens: int = 48,
        use_cache: bool = True,
        mix_gold: bool = False,
        passes_per_round: int = 1,
    ):
        if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
            raise ValueError(f"proposal.k (samples per prompt) must be a positive integer, got {k!r}")
        if policy not in ("current", "frozen"):
            raise ValueError(f"proposal.policy must be 'current' or 'frozen', got {policy!r}")
        if not temperature > 0:
            raise ValueError(f"proposal.temperature must be positive, got {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"proposal.top_p must be in (0, 1], got {top_p}")
        if top_k < 0:
            raise ValueError(f"proposal.top_k must be ≥ 0 (0: off), got {top_k}")
        if max_new_tokens <= 0 or chunk_prompts <= 0 or passes_per_round <= 0:
            raise ValueError(
                "proposal.max_new_tokens, proposal.chunk_prompts and proposal.passes_per_round must be positive, got "
                f"{max_new_tokens}, {chunk_prompts}, {passes_per_round}"
            )
        if not hasattr(task, "score") or not hasattr(task, "pool"):
            raise TypeError(
                "proposal=policy needs a task with problem pools and a verifier (task=arithmetic), "
                f"got {type(task).__name__}"
            )
        self.task = task
        self.k = k
        self.group_size = k
        self.pool_name = pool
        self.ids = task.pool(pool)
        if prompts_per_round is not None and prompts_per_round <= 0:
            raise ValueError(
                f"proposal.prompts_per_round must be positive or null (the whole pool), got {prompts_per_round}"
            )
        self.prompts_per_round = prompts_per_round
        self.chunk_prompts = int(chunk_prompts)
        self.policy = policy
        self.temperature = float(temperature)
        self.top_k = int(top_k)
        self.top_p = float(top_p)
        self.max_new_tokens = int(max_new_tokens)
        self.use_cache = bool(use_cache)
        self.mix_gold = bool(mix_gold)
        self.passes_per_round = int(passes_per_round)
        self.model: Any = None
        self._snapshot: dict[str, torch.Tensor] | None = None
        self._rank, self._world = 0, 1
        self._round_seed: int | None = None
        self.start_round()

    # -- binding and rounds ----------------------------------------------------------------
    def bind(self, model: Any) -> None:
        """Use ``model`` from now on; a new round starts (fresh prompt order and figures)."""
        require_methods(
            model,
            ("generate", "encode_prompts", "pack", "decode"),
            who="proposal=policy",
            fix="choose a language model (model=tiny_gpt or model=hf_causal_lm)",
        )
        self.model = model
        self._round_seed, self._rank, self._world = None, 0, 1  # the data module's split_round follows
        if self.policy == "frozen" and self._snapshot is None:
            self._snapshot = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.start_round()

    def split_round(self, round_seed: int, rank: int, world: int) -> None:
        """Draw this round's prompt order from ``round_seed`` (the same on every rank) and own part ``rank``."""
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not one of the {world} ranks")
        self._round_seed, self._rank, self._world = int(round_seed), int(rank), int(world)
        self.start_round()

    def start_round(self) -> None:
        self._order: torch.Tensor | None = None  # this rank's prompts, in the order they are drawn
        self._cursor = 0
        self._order_stream: torch.Generator | None = None
        self._groups = 0
        self._counts = {
            "candidates": 0,
            "correct": 0,
            "finished": 0,
            "reward": 0.0,
            "tokens": 0,
            "generate_seconds": 0.0,
        }
        self._prompts: set[int] = set()
        self._prompts_with_correct: set[int] = set()
        self._correct_paths: set[tuple[int, int]] = set()

    def _next_prompts(self, m: int, generator: torch.Generator) -> torch.Tensor:
        picked = []
        while m > 0:
            if self._order is None:
                self._order = self._round_prompts(generator)
                self._cursor = 0
            elif self._cursor >= len(self._order):
                # More than one pass (num_accepted mode): the same prompts, in a new order, so a prompt's
                # samples never move to another rank within the round.
                stream = self._order_stream or generator
                self._order = self._order[
                    torch.randperm(len(self._order), generator=stream, device=stream.device).cpu()
                ]
                self._cursor = 0
            take = min(m, len(self._order) - self._cursor)
            picked.append(self._order[self._cursor : self._cursor + take])
            self._cursor += take
            m -= take
        return torch.cat(picked)

    def capacity(self) -> int | None:
        """Candidates this rank can still draw in the round before a prompt comes round again (prompts left × k):
        with ``sampler.count=groups`` a round draws prompts without replacement and ends when they run out."""
        if self._order is None:  # nothing drawn yet this round: the rank's whole part of the pool
            return len(self.ids[self._rank :: self._world]) * self.k
        return (len(self._order) - self._cursor) * self.k

    def _round_prompts(self, generator: torch.Generator) -> torch.Tensor:
        """This rank's prompts of the round: part ``rank`` of a permutation every rank draws alike."""
        if self._round_seed is None:  # used on its own (no data module): the engine's stream orders the pool
            stream = generator
        else:
            stream = torch.Generator().manual_seed(self._round_seed)
            self._order_stream = stream
        perm = torch.randperm(len(self.ids), generator=stream, device=stream.device).cpu()
        own = self.ids[perm][self._rank :: self._world]
        if len(own) == 0:
            raise ValueError(
                f"rank {self._rank} of {self._world} has no prompts: the pool {self.pool_name!r} holds only "
                f"{len(self.ids)}; use fewer processes (trainer.devices) or a larger pool"
            )
        return own

    # -- drawing ---------------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator) -> Batch:
        if self.model is None:
            raise RuntimeError(
                "PolicyProposal.sample called before bind(model): the data module binds the model being trained"
            )
        if n % self.k:
            raise ValueError(
                f"the engine asked for {n} candidates, not a multiple of proposal.k={self.k}: the k samples of a "
                "prompt must stay in one chunk. Set sampler.chunk_size and sampler.num_proposals to multiples of k "
                "(conf/proposal/policy.yaml derives both)"
            )
        pieces = []
        for start in range(0, n // self.k, self.chunk_prompts):
            m = min(self.chunk_prompts, n // self.k - start)
            pieces.append(self._sample_groups(self._next_prompts(m, generator), generator))
        return {key: torch.cat([p[key] for p in pieces]) for key in pieces[0]}

    @torch.no_grad()
    def _sample_groups(self, prompt_ids: torch.Tensor, generator: torch.Generator) -> Batch:
        model, k = self.model, self.k
        prompts = self.task.prompts(prompt_ids)
        ids, mask = model.encode_prompts(prompts)
        current = None
        if self._snapshot is not None:  # sample from the frozen snapshot, then put the live weights back
            current = {name: v.detach().clone() for name, v in model.state_dict().items()}
            model.load_state_dict(self._snapshot)
        started = time.perf_counter()
        try:
            out = model.generate(
                ids,
                mask,
                max_new_tokens=self.max_new_tokens,
                generator=generator,
                temperature=self.temperature,
                top_k=self.top_k,
                top_p=self.top_p,
                use_cache=self.use_cache,
                num_samples=k,  # each prompt is read once for its k samples
            )
        finally:
            if current is not None:
                model.load_state_dict(current)
        self._counts["generate_seconds"] += time.perf_counter() - started
        self._counts["tokens"] += int(out["length"].sum())
        dev = ids.device
        rep = prompt_ids.to(dev).repeat_interleave(k)
        scores = self.task.score(rep, model.decode(out["completion"]))
        finished = out["finished"]
        scores["correct"] = scores["correct"] & finished
        scores["reward"] = torch.where(finished, scores["reward"], torch.zeros_like(scores["reward"]))
        m = len(prompt_ids)
        group = self._groups + torch.arange(m, device=dev).repeat_interleave(k)
        self._groups += m
        self._record(rep, scores, finished)
        return {
            "prompt_id": rep,
            "group": group,
            **model.pack(ids.repeat_interleave(k, 0), mask.repeat_interleave(k, 0), out["completion"], out["length"]),
            "length": out["length"],
            "finished": finished,
            "log_prob": out["log_prob"],
            "log_q": out["log_q"],
            **scores,
        }

    def _record(self, prompt_ids: torch.Tensor, scores: Batch, finished: torch.Tensor) -> None:
        c = self._counts
        c["candidates"] += len(prompt_ids)
        c["correct"] += int(scores["correct"].sum())
        c["finished"] += int(finished.sum())
        c["reward"] += float(scores["reward"].sum())
        pids = prompt_ids.tolist()
        self._prompts.update(pids)
        correct = scores["correct"].tolist()
        hashes = scores["path_hash"].tolist()
        for pid, ok, h in zip(pids, correct, hashes):
            if ok:
                self._prompts_with_correct.add(pid)
                self._correct_paths.add((pid, h))

    # -- what the data module asks after a round ---------------------------------------------
    # -- checkpointing ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The frozen snapshot (policy=frozen): a resumed run must keep sampling the model of the first round."""
        return {"snapshot": self._snapshot} if self._snapshot is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        snapshot = state.get("snapshot")
        if snapshot is not None and self.policy != "frozen":
            raise ValueError(
                "the checkpoint holds a frozen proposal snapshot (proposal.policy=frozen) but this run has "
                f"proposal.policy={self.policy!r}; resume with the same proposal.policy"
            )
        self._snapshot = snapshot

    def round_stats(self, accepted: Batch) -> dict[str, float]:
        """Per-round diagnostics (logged as sampling/round_*; quoted when a round accepts nothing)."""
        c = self._counts
        prompts = max(len(self._prompts), 1)
        n = max(c["candidates"], 1)
        acc_prompts = accepted["prompt_id"].tolist() if "prompt_id" in accepted else []
        acc_paths = set(zip(acc_prompts, accepted["path_hash"].tolist())) if acc_prompts else set()
        return {
            "round_prompts": float(len(self._prompts)),
            "round_candidates": float(c["candidates"]),
            "round_correct_rate": c["correct"] / n,
            "round_finished_rate": c["finished"] / n,
            "round_mean_reward": c["reward"] / n,
            "round_prompts_with_correct": len(self._prompts_with_correct) / prompts,
            "round_correct_paths_per_prompt": len(self._correct_paths) / prompts,
            "round_prompts_with_accepted": len(set(acc_prompts)) / prompts,
            "round_accepted_paths_per_prompt": len(acc_paths) / prompts,
            "round_accepted_per_prompt": len(acc_prompts) / prompts,
            # Generated tokens (eos included, prompts not) per second of generate(): the sampling speed.
            "round_tokens": float(c["tokens"]),
            "round_tokens_per_s": c["tokens"] / c["generate_seconds"] if c["generate_seconds"] > 0 else 0.0,
            # what a kept sample cost in generation (the point of filtering: DAPO's dynamic sampling pays more)
            "round_tokens_per_accepted": c["tokens"] / len(acc_prompts) if acc_prompts else math.nan,
        }

    def stat_combiners(self) -> dict[str, str]:
        # counts add up over processes (each owns whole prompts); rates and speeds are per process, averaged
        counts = ("round_prompts", "round_candidates", "round_tokens")
        rates = (
            "round_correct_rate",
            "round_finished_rate",
            "round_mean_reward",
            "round_prompts_with_correct",
            "round_correct_paths_per_prompt",
            "round_prompts_with_accepted",
            "round_accepted_paths_per_prompt",
            "round_accepted_per_prompt",
            "round_tokens_per_s",
            "round_tokens_per_accepted",
        )
        return {**dict.fromkeys(counts, "sum"), **dict.fromkeys(rates, "mean")}

    def training_rows(self, accepted: Batch) -> Batch:
        """The round's training set: the accepted rows (+ the gold SFT rows), ``passes_per_round`` times."""
        batch = accepted
        if self.mix_gold:
            gold = gold_rows(self.task, self.model, self.task.pool("sft"))
            batch = {
                key: torch.cat([accepted[key], gold[key].to(accepted[key].device, accepted[key].dtype)])
                for key in accepted
            }
        if self.passes_per_round > 1:
            batch = {
                key: value.repeat(self.passes_per_round, *([1] * (value.dim() - 1))) for key, value in batch.items()
            }
        return batch

    def pretraining_source(self, model: Any) -> GoldProposal:
        """``model.pretrain``: supervised fine-tuning on the gold chains of thought of the SFT pool."""
        return GoldProposal(self.task, model)
