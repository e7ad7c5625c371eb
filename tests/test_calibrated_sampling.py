"""Calibrated goodness-of-fit tests beyond tests/test_goodness_of_fit.py: heavy tails, discrete, 5-D,
reweighing, best-of-n, Boltzmann, and an on-policy flow proposal with its defensive mixture.

False-failure rate: every test fails only when a p-value falls below ALPHA = 1e-6 (where one test combines
m p-values it uses ALPHA / m for each: Bonferroni, so the rate stays ≤ 1e-6). Under a correct sampler the
p-value is (asymptotically) uniform, so each test's false-failure rate is ≤ 1e-6; the seeds are fixed, so
the outcome here is deterministic and the rate is what any other seed would risk.
Power: each test is paired with a deliberately wrong sampler (envelope too small, wrong temperature, wrong
group size, no reweighing) that the same statistic must reject at the same ALPHA.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import distributions as D

from rsft import DensityRatio, DistributionProposal, rejection_sample
from rsft.acceptance.base import AcceptAll
from rsft.acceptance.fairness import Reweighing
from rsft.acceptance.lm import BestOfN, Boltzmann
from rsft.models.flow import FlowModel
from rsft.proposals.base import Proposal
from rsft.proposals.dataset import DatasetProposal
from rsft.proposals.distribution import isotropic_normal, student_t
from rsft.proposals.model import ModelProposal
from rsft.targets import GaussianMixture

ALPHA = 1e-6


def ks(samples: torch.Tensor, cdf) -> float:
    return float(stats.kstest(samples.double().flatten().numpy(), cdf).pvalue)


def chi2_gof(values: torch.Tensor, probs: np.ndarray) -> float:
    """χ² goodness of fit of integer ``values`` in 0..K-1 to ``probs`` (every expected count is ≥ 5 here)."""
    observed = np.bincount(values.long().flatten().numpy(), minlength=len(probs))
    expected = probs / probs.sum() * observed.sum()
    assert expected.min() >= 5, "too few expected counts for the χ² approximation"
    return float(stats.chisquare(observed, expected).pvalue)


# -- heavy tails: Student-t(3) from a Cauchy proposal -------------------------------------------


def student_from_cauchy(log_M, n=20_000, seed=10):
    res = rejection_sample(
        DistributionProposal(D.Cauchy(0.0, 1.0)), DensityRatio(D.StudentT(3.0), log_M=log_M), num_accepted=n, seed=seed
    )
    return res.batch["x"]


def test_student_t_from_cauchy_is_exact():
    assert ks(student_from_cauchy("auto"), stats.t(3).cdf) > ALPHA


@pytest.mark.filterwarnings("ignore:the envelope acceptance.log_M")  # the wrong sampler warns, as it should
def test_student_t_test_rejects_an_envelope_that_is_too_small():
    # sup p/q ≈ 1.2 (at 0); with M = 0.6 the middle is accepted with probability 1 and under-weighted.
    assert ks(student_from_cauchy(math.log(0.6)), stats.t(3).cdf) < ALPHA


# -- discrete: categorical target from a categorical proposal (χ²) ------------------------------

Q = torch.tensor([0.30, 0.25, 0.20, 0.10, 0.10, 0.05])
P = torch.tensor([0.05, 0.10, 0.15, 0.20, 0.25, 0.25])
SUP = float((P / Q).max())  # 5.0


def categorical_samples(log_M, seed=11):
    res = rejection_sample(
        DistributionProposal(D.Categorical(probs=Q)),
        DensityRatio(D.Categorical(probs=P), log_M=log_M),
        num_accepted=20_000,
        seed=seed,
    )
    return res.batch["x"]


@pytest.mark.parametrize("log_M", [math.log(SUP), "auto"])
def test_categorical_from_categorical_is_exact(log_M):
    assert chi2_gof(categorical_samples(log_M), P.numpy()) > ALPHA


@pytest.mark.filterwarnings("ignore:the envelope acceptance.log_M")  # the wrong sampler warns, as it should
def test_categorical_test_rejects_an_envelope_that_is_too_small():
    assert chi2_gof(categorical_samples(math.log(SUP / 2)), P.numpy()) < ALPHA


# -- 5-D: standard normal from independent Student-t(5) coordinates ----------------------------

DIM = 5


def normal_5d(log_M, n=20_000, seed=12):
    res = rejection_sample(
        student_t(dim=DIM, df=5.0, scale=1.2),
        DensityRatio(isotropic_normal(DIM), log_M=log_M),
        num_accepted=n,
        seed=seed,
    )
    return res.batch["x"]


def five_d_pvalue(x: torch.Tensor) -> float:
    """min of two Bonferroni-halved KS p-values (×2): squared radius ~ χ²(5), a fixed projection ~ N(0, 1)."""
    direction = torch.tensor([1.0, -2.0, 0.5, 1.5, -1.0])
    direction = direction / direction.norm()
    p_radius = ks((x**2).sum(1), stats.chi2(DIM).cdf)
    p_projection = ks(x @ direction, stats.norm.cdf)
    return min(1.0, 2 * min(p_radius, p_projection))


def test_5d_normal_from_student_t_is_exact():
    assert five_d_pvalue(normal_5d("auto")) > ALPHA


@pytest.mark.filterwarnings("ignore:the envelope acceptance.log_M")  # the wrong sampler warns, as it should
def test_5d_test_rejects_an_envelope_that_is_too_small():
    assert five_d_pvalue(normal_5d(math.log(0.5))) < ALPHA


# -- reweighing: the accepted joint of (s, y) is P(s) P(y) ---------------------------------------


def dependent_rows(n=2_000, seed=13) -> dict[str, torch.Tensor]:
    """Rows where the label depends strongly on the sensitive attribute (P(y=1 | s) = 0.2 or 0.7)."""
    g = torch.Generator().manual_seed(seed)
    s = (torch.rand(n, generator=g) < 0.4).long()
    y = (torch.rand(n, generator=g) < torch.where(s == 1, 0.2, 0.7)).long()
    return {"x": torch.randn(n, 3, generator=g), "s": s, "y": y}


def reweighing_pvalue(acceptance_for, seed=14) -> float:
    rows = dependent_rows()
    res = rejection_sample(DatasetProposal(rows), acceptance_for(rows), num_accepted=20_000, seed=seed)
    # The target: the product of the training rows' marginals, cells in the order 2 s + y.
    p_s = torch.bincount(rows["s"], minlength=2).double() / len(rows["s"])
    p_y = torch.bincount(rows["y"], minlength=2).double() / len(rows["y"])
    target = torch.outer(p_s, p_y).flatten().numpy()
    return chi2_gof(2 * res.batch["s"] + res.batch["y"], target)


def test_reweighing_accepts_the_product_of_the_marginals():
    assert reweighing_pvalue(Reweighing) > ALPHA


def test_reweighing_test_rejects_a_sampler_without_reweighing():
    assert reweighing_pvalue(lambda rows: AcceptAll()) < ALPHA


# -- best-of-n: the kept reward is the maximum of n draws --------------------------------------

REWARD_PROBS = torch.tensor([0.4, 0.3, 0.2, 0.1])  # rewards 0..3


class GroupedRewards(Proposal):
    """``group_size`` consecutive candidates share a group id (one prompt's samples); chunks hold whole groups."""

    def __init__(self, group_size: int):
        self.group_size = group_size

    def sample(self, n, generator):
        reward = torch.multinomial(REWARD_PROBS, n, replacement=True, generator=generator)
        return {"reward": reward.double(), "group": torch.arange(n) // self.group_size}


def max_of_n_probs(n: int) -> np.ndarray:
    cdf = torch.cumsum(REWARD_PROBS.double(), 0)
    return torch.diff(cdf**n, prepend=torch.zeros(1, dtype=torch.float64)).numpy()  # P(max = k) = F(k)^n − F(k−1)^n


def best_of_n_pvalue(group_size: int, n: int = 4, groups: int = 20_000, seed=15) -> float:
    res = rejection_sample(
        GroupedRewards(group_size),
        BestOfN(),
        num_proposals=groups * group_size,
        chunk_size=1_000 * group_size,
        seed=seed,
    )
    assert len(res) == groups  # one kept sample per group
    return chi2_gof(res.batch["reward"], max_of_n_probs(n))


def test_best_of_n_keeps_the_maximum_of_n_draws():
    assert best_of_n_pvalue(group_size=4) > ALPHA


def test_best_of_n_test_rejects_the_wrong_group_size():
    assert best_of_n_pvalue(group_size=3) < ALPHA  # best of 3 reported as best of 4


# -- Boltzmann: a tilted categorical ----------------------------------------------------------

BETA = 0.7
TOP = 3.0  # every group holds one sentinel with the top reward, so the group's best is TOP in every group


class RewardsWithSentinel(Proposal):
    """Groups of 4: a sentinel with reward TOP, then 3 rewards drawn from REWARD_PROBS (values 0..3)."""

    def sample(self, n, generator):
        reward = torch.multinomial(REWARD_PROBS, n, replacement=True, generator=generator).double()
        sentinel = torch.arange(n) % 4 == 0
        reward[sentinel] = TOP
        return {"reward": reward, "group": torch.arange(n) // 4, "sentinel": sentinel}


def boltzmann_pvalue(beta: float, seed=16) -> float:
    res = rejection_sample(
        RewardsWithSentinel(), Boltzmann(beta), num_proposals=4 * 20_000, chunk_size=4_000, seed=seed
    )
    kept = res.batch["reward"][~res.batch["sentinel"]]
    # Accept probability exp((r − TOP) / β) on draws from REWARD_PROBS: the tilted law ∝ q(r) exp(r / β).
    tilted = REWARD_PROBS.double() * torch.exp(torch.arange(4, dtype=torch.float64) / BETA)
    return chi2_gof(kept, tilted.numpy())


def test_boltzmann_accepts_the_tilted_categorical():
    assert boltzmann_pvalue(BETA) > ALPHA


def test_boltzmann_test_rejects_the_wrong_temperature():
    assert boltzmann_pvalue(2 * BETA) < ALPHA


# -- on-policy: a small flow (mixed with its defensive Gaussian) as the proposal ----------------

MIXTURE = GaussianMixture(torch.tensor([[-1.5, 0.0], [1.5, 0.5]]), std=0.7)


def on_policy_pvalue(log_M, n=10_000, seed=17) -> float:
    torch.manual_seed(0)
    flow = FlowModel(dim=2, kind="maf", transforms=2, hidden=(16, 16))
    flow.pretrain(
        lambda m, g: {"x": MIXTURE.sample(m, g)}, steps=30, batch_size=256, generator=torch.Generator().manual_seed(1)
    )
    proposal = ModelProposal(defensive=isotropic_normal(2, scale=3.0), defensive_weight=0.2)
    proposal.bind(flow)
    res = rejection_sample(proposal, DensityRatio(MIXTURE, log_M=log_M), num_accepted=n, seed=seed)
    exact = MIXTURE.sample(n, torch.Generator().manual_seed(seed + 1))
    edges = np.linspace(-4, 4, 11)
    both = [
        np.histogram2d(z[:, 0].numpy(), z[:, 1].numpy(), bins=[edges, edges])[0].ravel()
        for z in (res.batch["x"], exact)
    ]
    both = [np.append(h, n - h.sum()) for h in both]  # everything outside the grid is one more bin
    table = np.vstack(both)
    big = table.sum(0) >= 20
    table = np.hstack([table[:, big], table[:, ~big].sum(1, keepdims=True)])
    table = table[:, table.sum(0) > 0]
    return float(stats.chi2_contingency(table, correction=False).pvalue)


def test_on_policy_flow_proposal_with_defensive_mixture_is_exact():
    assert on_policy_pvalue("auto") > ALPHA


@pytest.mark.filterwarnings("ignore:the envelope acceptance.log_M")  # the wrong sampler warns, as it should
def test_on_policy_test_rejects_an_envelope_that_is_too_small():
    assert on_policy_pvalue(math.log(0.3)) < ALPHA


# -- the language models' token sampler: inverse CDF at one uniform per row ---------------------

VOCAB = 700  # two full blocks of token_sampling.BLOCK = 256 and a partial one
TOKEN_LOGITS = torch.randn(VOCAB, generator=torch.Generator().manual_seed(3)) * 0.6


def token_pvalue(monkeypatch, temperature, top_k, top_p, vocab=VOCAB, drawn_at=None, n=100_000, seed=19) -> float:
    """χ² of n tokens drawn by choose_tokens (at ``drawn_at``, default ``temperature``) over the first
    ``vocab`` logits against softmax(filter(logits / temperature)) over the tokens it keeps; a token
    outside them fails outright."""
    from rsft.models import token_sampling

    monkeypatch.setattr(token_sampling, "ELEMENTS", 10_000 * vocab)  # logits per pass: a speed knob, not the law
    logits = TOKEN_LOGITS[:vocab]
    g = torch.Generator().manual_seed(seed)
    draws = []
    for _ in range(n // 10_000):
        u = torch.rand(10_000, generator=g, dtype=torch.float64)
        rows = logits.expand(10_000, -1)
        draws.append(token_sampling.choose_tokens(rows, None, u, drawn_at or temperature, top_k, top_p)[0])
    target = token_sampling.filter_logits(logits / temperature, top_k, top_p).softmax(-1).double()
    kept = (target > 0).nonzero().squeeze(1)
    tokens = torch.cat(draws)
    assert bool((target[tokens] > 0).all()), "a token the sampling distribution excludes was drawn"
    return chi2_gof(torch.searchsorted(kept, tokens), target[kept].numpy())


@pytest.mark.parametrize(
    "vocab, temperature, top_k, top_p", [(700, 0.7, 0, 1.0), (700, 1.3, 500, 0.9), (100, 0.7, 0, 1.0)]
)
def test_token_sampler_draws_the_tempered_filtered_softmax(monkeypatch, vocab, temperature, top_k, top_p):
    """Three settings at ALPHA / 3 each (Bonferroni): 700 tokens (the two-level inversion: blocks, then
    inside the block) with and without top-k/top-p, and 100 tokens (one block); measured p = 0.82, 0.26, 0.63.
    Code mutations that fail them (p = 0, or a token outside top-k/top-p drawn): the token one past the
    inverse within its block (offset + 1), the mass before the block read one block too far
    (cumulative[block]), the one-block search one token too far (100 tokens)."""
    assert token_pvalue(monkeypatch, temperature, top_k, top_p, vocab) > ALPHA / 3


def test_token_sampler_test_rejects_the_wrong_temperature(monkeypatch):
    assert token_pvalue(monkeypatch, 0.7, 0, 1.0, drawn_at=0.8) < ALPHA


def test_token_sampler_log_probabilities_are_the_models_and_the_sampled_distributions():
    from rsft.models.token_sampling import choose_tokens, filter_logits

    logits = torch.randn(37, VOCAB, generator=torch.Generator().manual_seed(4)) * 2
    u = torch.rand(37, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    for temperature, top_k, top_p in ((1.0, 0, 1.0), (0.7, 0, 1.0), (1.3, 50, 0.8)):
        token, log_prob, log_q = choose_tokens(logits, None, u, temperature, top_k, top_p)
        model = logits.double().log_softmax(-1).gather(1, token[:, None]).squeeze(1)
        sampled = filter_logits(logits.double() / temperature, top_k, top_p).log_softmax(-1)
        assert torch.allclose(log_prob, model, atol=1e-5) and torch.allclose(
            log_q, sampled.gather(1, token[:, None]).squeeze(1), atol=1e-5
        )
    rows = torch.tensor([4, 0, 9])
    token, log_prob, log_q = choose_tokens(logits, rows, None, 1.0, 0, 1.0)  # greedy, on some rows
    assert torch.equal(token, logits[rows].argmax(-1)) and bool((log_q == 0).all())
    assert torch.allclose(log_prob, logits[rows].double().log_softmax(-1).amax(-1), atol=1e-5)


# -- CPU and GPU: the same law ------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_sampling_follows_the_same_law_as_cpu():
    def draw(device):
        res = rejection_sample(
            DistributionProposal(D.Cauchy(0.0, 1.0)),
            DensityRatio(D.StudentT(3.0), log_M="auto"),
            num_accepted=20_000,
            seed=18,
            device=device,
        )
        return res.batch["x"].cpu()

    gpu, cpu = draw("cuda"), draw("cpu")
    # Two p-values at ALPHA / 2 each (Bonferroni): the GPU draws follow t(3), and the same law as the CPU draws.
    assert ks(gpu, stats.t(3).cdf) > ALPHA / 2
    assert stats.ks_2samp(gpu.double().numpy(), cpu.double().numpy()).pvalue > ALPHA / 2
