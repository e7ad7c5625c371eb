"""LM acceptance rules on hand-made batches, and best-of-n's closed form."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from rsft.acceptance.base import AllOf
from rsft.acceptance.lm import (
    BestOfN,
    Boltzmann,
    Dedup,
    MaxPerPrompt,
    PassRateBand,
    RewardThreshold,
    Verifier,
    ZeroVarianceFilter,
)


def batch(reward, group, prompt=None, path=None, correct=None, equations_ok=None):
    reward = torch.tensor(reward, dtype=torch.float32)
    out = {"reward": reward, "group": torch.tensor(group)}
    out["prompt_id"] = torch.tensor(prompt if prompt is not None else group)
    out["path_hash"] = torch.tensor(path if path is not None else list(range(len(group))))
    out["correct"] = torch.tensor(correct) if correct is not None else reward >= 1
    out["equations_ok"] = torch.tensor(equations_ok) if equations_ok is not None else out["correct"]
    return out


G = torch.Generator().manual_seed(0)


def test_verifier_and_reward_threshold():
    b = batch([1.0, 0.0, 1.0, 0.5], [0, 0, 1, 1], equations_ok=[True, False, False, False])
    assert Verifier().accept(b, G).tolist() == [True, False, True, False]
    assert Verifier(require_equations=True).accept(b, G).tolist() == [True, False, False, False]
    assert RewardThreshold(0.5).accept(b, G).tolist() == [True, False, True, True]
    with pytest.raises(KeyError, match="acceptance=verifier needs the batch field 'correct'"):
        Verifier().accept({"reward": torch.zeros(2)}, G)


def test_best_of_n_keeps_one_top_sample_per_group():
    b = batch([0.2, 0.9, 0.1, 0.5, 0.5, 0.0], [0, 0, 0, 1, 1, 1])
    keep = BestOfN().accept(b, G)
    assert keep.tolist()[:3] == [False, True, False]
    assert keep[3:].sum() == 1 and not keep[5]  # one of the two tied best


def test_zero_variance_filter_drops_all_right_and_all_wrong_groups():
    rule = ZeroVarianceFilter()
    b = batch([1, 1, 0, 0, 1, 0], [0, 0, 1, 1, 2, 2])
    assert rule.accept(b, G).tolist() == [False, False, False, False, True, True]
    assert rule.stats() == {"groups_seen": 3, "groups_dropped": 2}


def test_boltzmann_log_probability_is_relative_to_the_group_best():
    rule = Boltzmann(beta=0.5)
    b = batch([1.0, 0.0, 0.25, 0.75], [0, 0, 1, 1])
    expected = torch.tensor([0.0, -2.0, -1.0, 0.0], dtype=torch.float64)
    assert torch.allclose(rule.log_accept_prob(b), expected)
    with pytest.raises(ValueError, match="beta"):
        Boltzmann(0)


def test_boltzmann_acceptance_frequency():
    # 20,000 draws of a probability e^-1 ≈ 0.368: the binomial test's p-value is uniform under the rule,
    # so p < 1e-4 fails a correct implementation with probability 1e-4 (the seed makes it deterministic).
    n = 20_000
    b = batch([1.0, 0.5] * n, [i // 2 for i in range(2 * n)])
    keep = Boltzmann(beta=0.5).accept(b, torch.Generator().manual_seed(1))
    assert keep[0::2].all()
    assert stats.binomtest(int(keep[1::2].sum()), n, math.exp(-1)).pvalue > 1e-4


def test_max_per_prompt_caps_over_the_whole_round():
    rule = MaxPerPrompt(2)
    rule.start()
    first = rule.accept(batch([1, 1, 1, 1], [0, 0, 0, 1], prompt=[7, 7, 7, 8]), G)
    assert first[:3].sum() == 2 and first[3]
    second = rule.accept(batch([1, 1, 1], [2, 2, 2], prompt=[7, 8, 8]), G)
    assert second.tolist()[0] is False and second[1:].sum() == 1  # prompt 7 is full, prompt 8 has one slot
    rule.start()
    assert rule.accept(batch([1], [0], prompt=[7]), G).tolist() == [True]
    with pytest.raises(ValueError, match="max_per_prompt"):
        MaxPerPrompt(0)


def test_dedup_keeps_one_sample_per_path_and_prompt_across_chunks():
    rule = Dedup()
    rule.start()
    chunk1 = batch([1] * 5, [0, 0, 0, 1, 1], prompt=[3, 3, 3, 4, 4], path=[10, 10, 11, 10, 10])
    assert rule.accept(chunk1, G).tolist() == [True, False, True, True, False]
    chunk2 = batch([1] * 3, [2, 2, 2], prompt=[3, 3, 3], path=[11, 12, 12])
    assert rule.accept(chunk2, G).tolist() == [False, True, False]
    assert rule.stats() == {"duplicates": 4, "distinct_paths": 4}
    rule.start()  # a new round forgets
    assert rule.accept(chunk2, G).tolist() == [True, True, False]


def test_all_of_verifier_then_dedup_counts_distinct_correct_paths():
    rule = AllOf([Verifier(), Dedup()])
    rule.start()
    b = batch([1, 1, 0, 1], [0, 0, 0, 0], prompt=[1, 1, 1, 1], path=[5, 5, 6, 7])
    assert rule.accept(b, G).tolist() == [True, False, False, True]
    assert rule.stats()["rule1_distinct_paths"] == 2


def test_best_of_n_matches_its_closed_form_distribution_and_kl_bound():
    # Reference policy over 5 outcomes with distinct rewards 0..4. Best-of-n keeps the top sample, so
    # P_bon(y_i) = F(y_i)^n - F(y_{i-1})^n (F the reference CDF in reward order), and (Beirami et al.)
    # KL(P_bon || P_ref) <= log n - (n-1)/n. Chi-square goodness of fit on 20,000 groups: a correct
    # implementation fails (p < 1e-4) with probability 1e-4; the fixed seed makes the test deterministic.
    ref = torch.tensor([0.4, 0.25, 0.15, 0.12, 0.08], dtype=torch.float64)
    n, groups = 4, 20_000
    g = torch.Generator().manual_seed(3)
    outcome = torch.multinomial(ref, groups * n, replacement=True, generator=g)
    b = batch(outcome.float().tolist(), torch.arange(groups).repeat_interleave(n).tolist())
    kept = outcome[BestOfN().accept(b, g)]
    assert kept.numel() == groups
    cdf = ref.cumsum(0)
    p_bon = cdf**n - torch.cat([torch.zeros(1, dtype=torch.float64), cdf[:-1]]) ** n
    observed = torch.bincount(kept, minlength=5).double()
    assert stats.chisquare(observed.numpy(), (p_bon * groups).numpy()).pvalue > 1e-4
    kl = float((p_bon * (p_bon / ref).log()).sum())
    assert kl <= math.log(n) - (n - 1) / n


def _groups(correct_counts: list[int], k: int) -> dict[str, torch.Tensor]:
    """One group of k rows per entry, its first c rows correct."""
    correct = torch.tensor([[j < c for j in range(k)] for c in correct_counts]).reshape(-1)
    group = torch.arange(len(correct_counts)).repeat_interleave(k)
    return {"correct": correct, "group": group, "prompt_id": group.clone()}


def test_pass_rate_band_keeps_whole_groups_inside_the_band():
    batch = _groups([0, 1, 2, 3, 4], k=4)  # pass rates 0, .25, .5, .75, 1
    g = torch.Generator().manual_seed(0)
    kept = lambda rule: sorted(set(batch["group"][rule.accept(batch, g)].tolist()))  # noqa: E731
    assert kept(PassRateBand()) == [1, 2, 3]  # the default drops all-wrong and all-right groups
    assert kept(PassRateBand(0.25, 0.75)) == [2]  # strict: the ends are out
    assert kept(PassRateBand(0.25, 0.75, strict=False)) == [1, 2, 3]
    assert kept(PassRateBand(0.0, 0.0, strict=False)) == [0]
    rule = PassRateBand()
    rule.accept(batch, g)
    mask = rule.accept(batch, g)
    assert int(mask.sum()) == 12  # whole groups: 3 groups × 4 rows
    stats = rule.stats()
    assert stats["groups_seen"] == 10 and stats["groups_kept"] == 6
    assert stats["pass_rate_0_of_4"] == 2 and stats["pass_rate_4_of_4"] == 2
    assert set(rule.stat_combiners()) == set(stats) and set(rule.stat_combiners().values()) == {"sum"}
    assert "groups by correct samples so far: 0/4: 2, 1/4: 2" in rule.budget_hint()


@pytest.mark.parametrize(("low", "high", "strict"), [(0.6, 0.4, True), (0.5, 0.5, True), (-0.1, 1.0, True)])
def test_pass_rate_band_refuses_an_empty_or_invalid_band(low, high, strict):
    with pytest.raises(ValueError, match="acceptance.low"):
        PassRateBand(low, high, strict)


def test_pass_rate_band_counts_are_calibrated():
    """Groups of k = 4 Bernoulli(p) samples, p from {0.1, 0.5, 0.9}: the groups kept by the default band follow
    Binomial(G, P(0 < X < k)) and the pass-rate histogram follows the mixture of Binomial(k, p) (χ²), each failing
    at p < 1e-6 (the false-failure rate; Bonferroni over the two: α/2 each). Mutation that fails it: ends included
    (low ≤ rate ≤ high under strict=True) keeps every group."""
    k, per_p = 4, 20_000
    g = torch.Generator().manual_seed(11)
    probs = torch.tensor([0.1, 0.5, 0.9]).repeat_interleave(per_p)
    correct = torch.rand((len(probs), k), generator=g) < probs[:, None]
    group = torch.arange(len(probs)).repeat_interleave(k)
    batch = {"correct": correct.reshape(-1), "group": group, "prompt_id": group.clone()}
    rule = PassRateBand()
    rule.accept(batch, g)
    # P(X = c) for X ~ Binomial(k, p), averaged over the three p
    pmf = torch.stack(
        [
            torch.tensor([math.comb(k, c) * p**c * (1 - p) ** (k - c) for c in range(k + 1)], dtype=torch.float64)
            for p in (0.1, 0.5, 0.9)
        ]
    ).mean(0)
    n = len(probs)
    p_keep = float(pmf[1:k].sum())
    kept = rule.stats()["groups_kept"]
    assert stats.binomtest(int(kept), n, p_keep).pvalue > 1e-6 / 2
    observed = [rule.stats()[f"pass_rate_{c}_of_{k}"] for c in range(k + 1)]
    assert stats.chisquare(observed, (pmf * n).tolist()).pvalue > 1e-6 / 2
