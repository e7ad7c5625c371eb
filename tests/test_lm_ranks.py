"""LM rounds split over ranks, simulated in one process: every prompt gets exactly k samples per round.

The data module reads its rank and world size from the trainer; a stand-in trainer lets one process play
every rank of a round in turn, so the split is tested without spawning processes (tests/test_ddp.py runs
the real two-process version).
"""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from test_lm import tiny_model, tiny_task

from rsft.acceptance.base import AllOf
from rsft.acceptance.lm import MaxPerPrompt, RewardThreshold
from rsft.data import RejectionSamplingDataModule
from rsft.proposals.policy import PolicyProposal


def rank_trainer(rank: int, world: int, epoch: int = 0) -> SimpleNamespace:
    """What the data module reads of a Lightning trainer on rank ``rank`` of ``world``."""
    return SimpleNamespace(
        global_rank=rank,
        world_size=world,
        current_epoch=epoch,
        lightning_module=None,
        strategy=SimpleNamespace(root_device=torch.device("cpu")),
    )


def round_over_ranks(acceptance, world: int, num_proposals: int, k: int = 2, epoch: int = 0, seed: int = 3):
    """The accepted prompt ids of every rank of one round, and the candidates each rank judged."""
    model, task = tiny_model().eval(), tiny_task()
    accepted, judged = [], []
    for rank in range(world):
        proposal = PolicyProposal(task, k=k, pool="sft", chunk_prompts=8, max_new_tokens=8)
        data = RejectionSamplingDataModule(
            proposal,
            acceptance,
            task,
            {"num_accepted": None, "num_proposals": num_proposals, "chunk_size": 8 * k},
            seed=seed,
        )
        data.trainer = rank_trainer(rank, world, epoch)
        acceptance.start()
        result = data.sample_round(model, epoch)
        accepted.append(result.batch["prompt_id"].tolist())
        judged.append(int(result.stats["proposals"]))
    return accepted, judged


@pytest.mark.parametrize(("world", "prompts"), [(2, 32), (2, 7), (3, 32), (4, 9)])
def test_every_prompt_gets_exactly_k_samples_per_round_over_all_ranks(world, prompts):
    k = 2
    keep_all = RewardThreshold(float("-inf"))
    accepted, judged = round_over_ranks(keep_all, world, num_proposals=prompts * k, k=k)
    assert sum(judged) == prompts * k and all(n % k == 0 for n in judged)
    counts = Counter(p for rows in accepted for p in rows)
    assert len(counts) == prompts and set(counts.values()) == {k}, counts  # k each, over all ranks
    owners = [set(rows) for rows in accepted]
    assert sum(len(o) for o in owners) == prompts  # whole prompts per rank: no prompt on two ranks
    assert max(len(o) for o in owners) - min(len(o) for o in owners) <= 1
    # The round's prompts do not depend on how many ranks share it: the same as one process draws.
    alone, _ = round_over_ranks(keep_all, 1, num_proposals=prompts * k, k=k)
    assert set(counts) == set(alone[0])


def test_per_prompt_rules_see_every_sample_of_their_prompt_over_ranks():
    # At most one kept sample per prompt over the whole round: with a prompt on two ranks, two would survive.
    one_each = AllOf([RewardThreshold(float("-inf")), MaxPerPrompt(1)])
    accepted, _ = round_over_ranks(one_each, 2, num_proposals=32 * 2)
    counts = Counter(p for rows in accepted for p in rows)
    assert len(counts) == 32 and set(counts.values()) == {1}


def test_a_rank_share_too_small_for_one_group_each_is_refused():
    task = tiny_task()
    data = RejectionSamplingDataModule(
        PolicyProposal(task, k=2), RewardThreshold(0.0), task, {"num_accepted": None, "num_proposals": 2}
    )
    data.trainer = rank_trainer(0, 2)
    with pytest.raises(ValueError, match=r"sampler.num_proposals=2 is less than one group of 2 for each of the 2"):
        data.share(2, "sampler.num_proposals", 2)
    with pytest.raises(ValueError, match=r"sampler.num_proposals=5 is not a multiple of .* group size 2"):
        data.share(5, "sampler.num_proposals", 2)
    with pytest.raises(ValueError, match=r"sampler.num_accepted=1 is less than one row for each of the 2 processes"):
        data.share(1, "sampler.num_accepted")
    assert [data.share(5, "sampler.num_accepted")] == [3]
