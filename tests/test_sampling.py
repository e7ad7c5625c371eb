"""The engine: counts, shapes, budgets, partial returns, determinism, devices, envelopes, bad input."""

from __future__ import annotations

import math
import time

import pytest
import torch
from torch import distributions as D

from rsft import (
    AcceptAll,
    AcceptanceBudgetError,
    Ball,
    DensityRatio,
    DistributionProposal,
    Interval,
    NonFiniteDensityError,
    Region,
    rejection_sample,
)
from rsft.proposals.base import Proposal
from rsft.proposals.distribution import gaussian


def beta_setup(log_M="auto"):
    return DistributionProposal(D.Uniform(0.0, 1.0)), DensityRatio(D.Beta(2.0, 5.0), log_M=log_M)


def test_issue_example_returns_exact_count_and_stats():
    proposal, acceptance = beta_setup()
    res = rejection_sample(proposal, acceptance, num_accepted=20_000, seed=0, device="cpu")
    assert res.batch["x"].shape == (20_000,)
    assert res.batch["log_q"].shape == (20_000,)
    for key in (
        "proposals",
        "accepted",
        "acceptance_rate",
        "log_M",
        "envelope_violations",
        "seconds",
        "proposals_per_s",
    ):
        assert key in res.stats, key
    assert res.stats["accepted"] == 20_000
    assert res.stats["acceptance_rate"] == pytest.approx(20_000 / res.stats["proposals"])
    # Beta(2,5) mode density 2.4576 over a uniform: rate = 1/M ≈ 1/(2.4576 × 1.2) ≈ 0.34 after the pilot (the
    # first half of the first chunk, 32,768 candidates that only set M: none of them is accepted).
    assert res.stats["envelope_history"] == [(32_768, pytest.approx(res.stats["log_M"]))]
    assert 0.30 < 20_000 / (res.stats["proposals"] - 32_768) < 0.38
    assert ((res.batch["x"] > 0) & (res.batch["x"] < 1)).all()


@pytest.mark.parametrize("chunk_size", [1, 7, 1000, 100_000])
def test_exact_count_for_any_chunk_size(chunk_size):
    proposal, acceptance = beta_setup()
    res = rejection_sample(proposal, acceptance, num_accepted=333, chunk_size=chunk_size, seed=1)
    assert res.batch["x"].shape == (333,)
    assert res.stats["accepted"] == 333
    assert res.stats["proposals"] <= res.stats["proposals_drawn"]


def test_event_shape_is_kept_for_multivariate_proposals():
    res = rejection_sample(gaussian(dim=3, scale=2.0), Region(Ball(2.0)), num_accepted=500, seed=0)
    assert res.batch["x"].shape == (500, 3)
    assert (res.batch["x"].norm(dim=1) < 2.0).all()
    assert res.stats["log_M"] == 0.0 and res.stats["envelope_violations"] == 0


def test_same_seed_same_samples_and_different_seed_different_samples():
    a = rejection_sample(*beta_setup(), num_accepted=1000, seed=7).batch["x"]
    b = rejection_sample(*beta_setup(), num_accepted=1000, seed=7).batch["x"]
    c = rejection_sample(*beta_setup(), num_accepted=1000, seed=8).batch["x"]
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_explicit_generator_continues_its_stream():
    g = torch.Generator().manual_seed(3)
    first = rejection_sample(*beta_setup(), num_accepted=100, generator=g).batch["x"]
    second = rejection_sample(*beta_setup(), num_accepted=100, generator=g).batch["x"]
    assert not torch.equal(first, second)
    g2 = torch.Generator().manual_seed(3)
    assert torch.equal(first, rejection_sample(*beta_setup(), num_accepted=100, generator=g2).batch["x"])


def test_sampling_leaves_global_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    rejection_sample(*beta_setup(), num_accepted=100, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_budget_error_says_what_happened_and_what_to_change():
    proposal = gaussian(dim=2)
    with pytest.raises(AcceptanceBudgetError) as info:
        rejection_sample(
            proposal, Region(Ball(0.05)), num_accepted=10_000, max_proposals=50_000, fail_fast=False, seed=0
        )
    msg = str(info.value)
    assert "50,000 proposals drawn" in msg
    assert "of 10,000 accepted" in msg
    assert "observed acceptance rate" in msg
    assert "sampler.max_proposals=50,000" in msg
    assert "sampler.allow_partial=true" in msg
    assert info.value.stats["proposals_drawn"] == 50_000


def test_fail_fast_stops_before_the_budget_is_spent():
    proposal = gaussian(dim=2)
    with pytest.raises(AcceptanceBudgetError, match="stopped early") as info:
        rejection_sample(
            proposal, Region(Ball(0.01)), num_accepted=10_000, max_proposals=10_000_000, chunk_size=10_000, seed=0
        )
    assert info.value.stats["proposals_drawn"] < 1_000_000


def test_partial_returns_what_was_accepted_with_a_warning():
    proposal = gaussian(dim=2)
    with pytest.warns(UserWarning, match="allow_partial"):
        res = rejection_sample(
            proposal,
            Region(Ball(0.1)),
            num_accepted=10_000,
            max_proposals=20_000,
            allow_partial=True,
            fail_fast=False,
            seed=0,
        )
    n = res.stats["accepted"]
    assert 0 < n < 10_000
    assert res.batch["x"].shape == (n, 2)
    assert res.stats["proposals_drawn"] == 20_000


def test_partial_with_nothing_accepted_returns_empty_batch_of_the_right_shape():
    with pytest.warns(UserWarning):
        res = rejection_sample(
            gaussian(dim=4), Region(Ball(1e-3)), num_accepted=10, max_proposals=1000, allow_partial=True, seed=0
        )
    assert res.batch["x"].shape == (0, 4)


def test_seed_document_example_fails_fast_with_the_rate():
    # x ~ N(0, I_100), accept iff ||x|| < 1: P = P(chi2_100 < 1) ≈ 1.8e-80. Must not loop, must not crash on shapes.
    assert math.exp(Ball(1.0).log_probability_under_standard_normal(100)) == pytest.approx(1.8e-80, rel=0.05)
    start = time.perf_counter()
    with pytest.raises(AcceptanceBudgetError) as info:
        rejection_sample(gaussian(dim=100), Region(Ball(1.0)), num_accepted=20_000, seed=0)
    assert time.perf_counter() - start < 30
    msg = str(info.value)
    assert "0 accepted" in msg and "observed acceptance rate 0" in msg and "sampler.max_proposals" in msg


def test_num_proposals_mode_judges_exactly_that_many():
    proposal, acceptance = beta_setup()
    res = rejection_sample(proposal, acceptance, num_proposals=10_001, chunk_size=1000, seed=0)
    assert res.stats["proposals_drawn"] == 10_001
    assert res.batch["x"].shape[0] == res.stats["accepted"]
    assert res.stats["acceptance_rate"] == pytest.approx(res.stats["accepted"] / 10_001)


def test_accept_all_keeps_every_candidate():
    res = rejection_sample(gaussian(dim=2), AcceptAll(), num_accepted=100, chunk_size=30, seed=0)
    assert res.stats["proposals"] == 100 and res.stats["acceptance_rate"] == 1.0


def test_envelope_violations_are_counted_with_a_fixed_log_M():
    # Beta(2,5) peaks at 2.4576 > M = 1.5: every x with p(x) > 1.5 is a violation.
    proposal, acceptance = beta_setup(log_M=math.log(1.5))
    with pytest.warns(UserWarning, match="acceptance.log_M=0.405465 is too small"):
        res = rejection_sample(proposal, acceptance, num_proposals=100_000, seed=0)
    # P(Beta(2,5) density > 1.5 | x ~ U(0,1)) = length of {x : 30 x (1-x)^4 > 1.5} = 0.4085 - 0.0656
    expected = 100_000 * 0.3429
    assert abs(res.stats["envelope_violations"] - expected) < 6 * math.sqrt(expected)
    assert res.stats["log_M"] == pytest.approx(math.log(1.5))


def test_auto_envelope_is_raised_and_counted_when_a_larger_ratio_appears():
    class Spiky:
        """Unnormalised target whose ratio is huge only on a tiny interval: the pilot chunk misses it."""

        def log_prob(self, x):
            return torch.where((x > 0.5) & (x < 0.5001), torch.full_like(x, 8.0), torch.zeros_like(x))

    res = rejection_sample(
        DistributionProposal(D.Uniform(0.0, 1.0)), DensityRatio(Spiky()), num_proposals=400_000, chunk_size=1000, seed=0
    )
    assert res.stats["envelope_violations"] >= 1
    assert res.stats["envelope_raises"] >= 1
    assert res.stats["log_M"] == pytest.approx(8.0 + math.log(1.2))


def test_cpu_device_argument_and_generator_device_mismatch():
    res = rejection_sample(*beta_setup(), num_accepted=10, device="cpu", seed=0)
    assert res.batch["x"].device.type == "cpu"
    with pytest.raises(ValueError, match="generator lives on"):
        rejection_sample(*beta_setup(), num_accepted=10, device="meta", generator=torch.Generator())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sampling_stays_on_the_gpu():
    res = rejection_sample(*beta_setup(), num_accepted=1000, device="cuda", seed=0)
    assert res.batch["x"].device.type == "cuda"


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -5])
def test_num_accepted_must_be_positive(value):
    with pytest.raises(ValueError, match="num_accepted must be a positive integer.*sampler.num_accepted"):
        rejection_sample(*beta_setup(), num_accepted=value)


@pytest.mark.parametrize("value", [0, -1, 2.5])
def test_chunk_size_must_be_positive(value):
    with pytest.raises(ValueError, match="chunk_size must be a positive integer.*sampler.chunk_size"):
        rejection_sample(*beta_setup(), num_accepted=10, chunk_size=value)


def test_exactly_one_of_num_accepted_and_num_proposals():
    with pytest.raises(ValueError, match="exactly one of num_accepted and num_proposals"):
        rejection_sample(*beta_setup(), num_accepted=10, num_proposals=10)
    with pytest.raises(ValueError, match="exactly one"):
        rejection_sample(*beta_setup())


@pytest.mark.parametrize("log_M", [math.inf, -math.inf, math.nan])
def test_log_M_must_be_finite(log_M):
    with pytest.raises(ValueError, match="acceptance.log_M must be finite"):
        DensityRatio(D.Beta(2.0, 5.0), log_M=log_M)


def test_log_M_string_other_than_auto():
    with pytest.raises(ValueError, match="'auto'"):
        DensityRatio(D.Beta(2.0, 5.0), log_M="big")


def test_event_shape_mismatch_is_named():
    target = D.Independent(D.Normal(torch.zeros(3), torch.ones(3)), 1)
    with pytest.raises(ValueError, match="disagree on the event shape"):
        rejection_sample(gaussian(dim=2), DensityRatio(target, log_M=1.0), num_accepted=10, seed=0)


def test_nan_log_density_names_the_target():
    class NaNTarget:
        def log_prob(self, x):
            return torch.where(x > 0.5, torch.full_like(x, math.nan), torch.zeros_like(x))

    with pytest.raises(NonFiniteDensityError, match="target log_prob is not finite"):
        rejection_sample(DistributionProposal(D.Uniform(0.0, 1.0)), DensityRatio(NaNTarget()), num_accepted=10, seed=0)


def test_nan_proposal_density_names_the_proposal():
    class BadProposal(Proposal):
        def sample(self, n, generator):
            x = torch.rand(n, generator=generator)
            return {"x": x, "log_q": torch.full_like(x, math.nan)}

    with pytest.raises(NonFiniteDensityError, match="proposal log_q is not finite"):
        rejection_sample(BadProposal(), DensityRatio(D.Beta(2.0, 5.0)), num_accepted=10, seed=0)


def test_density_ratio_needs_log_q():
    class NoDensity(Proposal):
        def sample(self, n, generator):
            return {"x": torch.rand(n, generator=generator)}

    with pytest.raises(KeyError, match="no 'log_q'"):
        rejection_sample(NoDensity(), DensityRatio(D.Beta(2.0, 5.0)), num_accepted=10, seed=0)


def test_ragged_proposal_batch_is_rejected():
    class Ragged(Proposal):
        def sample(self, n, generator):
            return {"x": torch.rand(n, generator=generator), "extra": torch.zeros(n + 1)}

    with pytest.raises(ValueError, match="'extra' has shape"):
        rejection_sample(Ragged(), AcceptAll(), num_accepted=10, seed=0)


def test_region_predicate_must_return_one_bool_per_row():
    with pytest.raises(ValueError, match="one bool per candidate"):
        rejection_sample(gaussian(dim=2), Region(lambda x: x.norm(dim=1)), num_accepted=10, seed=0)


def test_proposal_with_batch_shape_is_rejected_with_the_fix():
    with pytest.raises(ValueError, match="Independent"):
        DistributionProposal(D.Normal(torch.zeros(3), torch.ones(3)))


def test_interval_region():
    res = rejection_sample(gaussian(dim=2), Region(Interval(-0.5, 1.0)), num_accepted=200, seed=0)
    assert ((res.batch["x"] > -0.5) & (res.batch["x"] < 1.0)).all()


# -- issue 13: envelopes, fail-fast spending, layouts, compact results, rule API ---------------------


def test_a_fixed_log_M_that_is_too_small_warns_once_with_the_count_and_the_fix():
    proposal, acceptance = beta_setup(log_M=math.log(1.5))
    with pytest.warns(UserWarning) as record:
        res = rejection_sample(proposal, acceptance, num_accepted=2000, chunk_size=100, seed=0)
    messages = [str(w.message) for w in record if "envelope" in str(w.message)]
    assert len(messages) == 1, messages
    count = int(res.stats["envelope_violations"])
    assert count > 0 and f"{count:,}" in messages[0]
    assert "acceptance.log_M" in messages[0] and "acceptance.on_violation" in messages[0]


def test_a_fixed_log_M_that_is_too_small_can_be_an_error():
    from rsft.acceptance.density import EnvelopeViolationError

    proposal = DistributionProposal(D.Uniform(0.0, 1.0))
    rule = DensityRatio(D.Beta(2.0, 5.0), log_M=math.log(1.5), on_violation="error")
    with pytest.raises(EnvelopeViolationError, match=r"acceptance\.log_M.*acceptance\.on_violation"):
        rejection_sample(proposal, rule, num_accepted=2000, chunk_size=100, seed=0)
    with pytest.raises(ValueError, match="acceptance.on_violation"):
        DensityRatio(D.Beta(2.0, 5.0), on_violation="ignore")


def test_a_valid_fixed_log_M_and_auto_raises_give_no_envelope_warning(recwarn):
    rejection_sample(*beta_setup(log_M=math.log(2.5)), num_accepted=2000, seed=0)
    res = rejection_sample(*beta_setup(), num_accepted=200, chunk_size=1, seed=0)
    assert res.stats["envelope_raises"] > 0  # auto raises drop the rows held, not warned about
    assert not [w for w in recwarn if "envelope" in str(w.message)]


def test_the_default_acceptance_config_offers_on_violation():
    from pathlib import Path

    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "acceptance" / "density_ratio.yaml")
    assert cfg.on_violation == "warn"


class LateStarter(AcceptAll):
    """Accepts nothing among the first ``warmup`` candidates it judges, then everything: a run that meets its
    budget easily although its early acceptance rate looks hopeless."""

    def __init__(self, warmup: int):
        self.warmup, self.seen = warmup, 0

    def accept(self, batch, generator):
        n = next(iter(batch.values())).shape[0]
        index = torch.arange(self.seen, self.seen + n)
        self.seen += n
        return index >= self.warmup


def test_fail_fast_spends_its_error_over_the_checks(monkeypatch):
    # 100 accepted within 2,000 proposals: the run needs 1,100. With nothing accepted yet, check k bounds the rate
    # by 2·level/k; at the first check's level (14.9) for every check (the mutation), fail-fast stops it at check
    # 709 (the remaining 1,291 proposals would give about 55 acceptances for 100 needed); the spent levels (28.9
    # at check 1000) let it finish.
    def run():
        return rejection_sample(
            gaussian(dim=1), LateStarter(1000), num_accepted=100, max_proposals=2000, chunk_size=1, seed=0
        )

    res = run()
    assert res.stats["accepted"] == 100 and res.stats["proposals_drawn"] == 1100
    import rsft.sampling

    first_level = rsft.sampling.fail_fast_level(1)
    monkeypatch.setattr(rsft.sampling, "fail_fast_level", lambda check: first_level)
    with pytest.raises(AcceptanceBudgetError, match="stopped early") as info:
        run()
    assert info.value.stats["proposals_drawn"] < 1000


class SwitchingProposal(Proposal):
    """Chunk 2 changes its layout: ``change`` is 'missing', 'extra', 'shape', 'dtype'."""

    def __init__(self, change: str):
        self.change, self.calls = change, 0

    def sample(self, n, generator):
        self.calls += 1
        x = torch.rand(n, 2, generator=generator)
        batch = {"x": x, "y": torch.zeros(n)}
        if self.calls >= 2:
            if self.change == "missing":
                del batch["y"]
            elif self.change == "extra":
                batch["z"] = torch.zeros(n)
            elif self.change == "shape":
                batch["y"] = torch.zeros(n, 3)
            else:
                batch["y"] = torch.zeros(n, dtype=torch.float64)
        return batch


@pytest.mark.parametrize(
    ("change", "field"), [("missing", "'y'"), ("extra", "'z'"), ("shape", "'y'"), ("dtype", "'y'")]
)
def test_proposal_layout_must_not_change_between_chunks(change, field):
    for mode in ({"num_accepted": 50}, {"num_proposals": 50}):
        with pytest.raises(ValueError, match=rf"chunk 2.*{field}|{field}.*chunk 2"):
            rejection_sample(SwitchingProposal(change), AcceptAll(), chunk_size=10, seed=0, **mode)


def test_a_pilot_chunk_of_zero_target_density_leaves_the_envelope_unset():
    class Corner:
        """Density only on (0.999, 1): the first chunks of 100 uniform candidates almost always miss it."""

        def log_prob(self, x):
            return torch.where(x > 0.999, torch.zeros_like(x), torch.full_like(x, -math.inf))

    proposal = DistributionProposal(D.Uniform(0.0, 1.0))
    res = rejection_sample(proposal, DensityRatio(Corner()), num_accepted=5, chunk_size=100, seed=0)
    assert bool((res.batch["x"] > 0.999).all())
    # The pilot is the first chunk with a finite ratio (0 inside the support): no raise, no violation counted.
    assert res.stats["log_M"] == pytest.approx(math.log(1.2))
    assert res.stats["envelope_raises"] == 0 and res.stats["envelope_violations"] == 0


@pytest.mark.parametrize("margin", [math.inf, math.nan, 0.5, "big"])
def test_margin_must_be_a_finite_number_at_least_one(margin):
    with pytest.raises(ValueError, match="acceptance.margin"):
        DensityRatio(D.Beta(2.0, 5.0), margin=margin)


@pytest.mark.parametrize("dim", [1, 3])
def test_num_proposals_mode_returns_compact_tensors(dim):
    proposal = gaussian(dim=dim)
    res = rejection_sample(proposal, Region(Ball(1.0)), num_proposals=3000, chunk_size=500, seed=0)
    rows = int(res.stats["accepted"])
    assert 0 < rows < 3000
    for key, value in res.batch.items():
        row_bytes = value[0].numel() * value.element_size()
        assert value.untyped_storage().nbytes() == rows * row_bytes, key


def test_num_proposals_mode_peak_is_the_output_plus_about_one_block():
    """A 64 MB output (2^24 candidates, half kept, 8 bytes a row) in chunks of 65,536, in a fresh interpreter.

    The bound is the output plus 48 MB (one 32 MiB block of rows, one chunk's temporaries, slack). Measured:
    33–34 MB beyond the output. The mutation, the previous storage (one buffer doubling when full, then a
    compacting copy: git show 08c104a:src/rsft/sampling.py), grew by 68 MB beyond it (132 MB in all).
    """
    from benchmarks.memory import measure_in_subprocess

    figures = measure_in_subprocess(2**24, 65_536, timeout=180, threshold=0.0)
    assert 63 < figures["output_mb"] < 65
    assert figures["growth_mb"] < figures["output_mb"] + 48, figures


def test_a_proposal_whose_parameters_require_grad_is_sampled_as_data():
    # It used to fail with "index_select(): functions with out=... arguments don't support automatic
    # differentiation"; the engine samples under torch.no_grad(), as a user of a trainable proposal expects.
    loc = torch.zeros((), requires_grad=True)
    for mode in ({"num_accepted": 50}, {"num_proposals": 500}):
        res = rejection_sample(
            DistributionProposal(D.Normal(loc, 1.0)), DensityRatio(D.Normal(0.0, 0.5)), chunk_size=100, seed=0, **mode
        )
        assert res.stats["accepted"] > 0
        assert not any(value.requires_grad for value in res.batch.values())
    assert torch.is_grad_enabled()  # restored after the call


@pytest.mark.parametrize("seed", [0, 2**64 - 1, -(2**63), -1])
def test_every_seed_torch_takes_is_accepted(seed):
    res = rejection_sample(*beta_setup(log_M=1.0), num_accepted=5, seed=seed)
    assert res.stats["accepted"] == 5


@pytest.mark.parametrize("seed", [2**64, -(2**63) - 1, 1.5, "0", True])
def test_a_seed_outside_torchs_range_names_the_argument_and_the_range(seed):
    with pytest.raises(ValueError, match=r"seed must be an integer in \[-2\*\*63, 2\*\*64 - 1\].*got"):
        rejection_sample(*beta_setup(log_M=1.0), num_accepted=5, seed=seed)


def test_accept_returning_a_list_is_a_clear_error():
    class ListRule(AcceptAll):
        def accept(self, batch, generator):
            return [True] * next(iter(batch.values())).shape[0]

    with pytest.raises(TypeError, match=r"ListRule\.accept must return a bool tensor.*got a list"):
        rejection_sample(gaussian(dim=1), ListRule(), num_accepted=5, seed=0)


def test_a_target_on_the_meta_device_is_a_clear_error():
    meta = torch.device("meta")
    target = D.Normal(torch.zeros((), device=meta), torch.ones((), device=meta), validate_args=False)
    with pytest.raises(ValueError, match="acceptance.target.*meta device"):
        rejection_sample(gaussian(dim=1), DensityRatio(target), num_accepted=5, seed=0)

    class MetaTarget:
        def log_prob(self, x):
            return torch.zeros(x.shape[0], device=meta)

    with pytest.raises(ValueError, match="acceptance.target.*meta device"):
        rejection_sample(gaussian(dim=1), DensityRatio(MetaTarget()), num_accepted=5, seed=0)


def test_a_raise_drops_the_rows_held_reproducibly_and_reports_it():
    # The spike (half the mass on (0.5, 0.52)) is missed by a chunk of 20 a third of the time, so the first
    # envelope is often far too small and a later chunk raises it by about 25×.
    from test_envelope_raises import Spike

    from rsft.acceptance.base import AllOf

    def run(rule, seed=2, **mode):
        return rejection_sample(DistributionProposal(D.Uniform(0.0, 1.0)), rule, chunk_size=20, seed=seed, **mode)

    first, again = (run(DensityRatio(Spike()), num_accepted=200) for _ in range(2))
    assert first.stats["thinned"] > 0 and first.stats["accepted"] == 200 == first.batch["x"].shape[0]
    assert torch.equal(first.batch["x"], again.batch["x"]) and first.stats["thinned"] == again.stats["thinned"]
    history = first.stats["envelope_history"]
    assert len(history) == first.stats["envelope_raises"] + 1 >= 2
    assert [log_M for _, log_M in history] == sorted(log_M for _, log_M in history)
    # Every row returned was drawn after the last raise (the rows before it were dropped).
    assert first.stats["proposals"] - history[-1][0] >= 200
    # num_proposals mode: the rows held at a raise are dropped and not replaced; exactly that many are judged.
    counted = run(DensityRatio(Spike()), num_proposals=4000)
    assert counted.stats["thinned"] > 0 and counted.stats["proposals_drawn"] == 4000
    assert counted.batch["x"].shape[0] == counted.stats["accepted"]
    # A rule inside all_of drops them too; a fixed envelope never does.
    nested = run(AllOf([AcceptAll(), DensityRatio(Spike())]), num_accepted=200)
    assert nested.stats["thinned"] > 0 and nested.batch["x"].shape[0] == 200
    fixed = run(DensityRatio(Spike(), log_M=math.log(25.5 * 1.2)), num_accepted=200)
    assert fixed.stats["thinned"] == 0 and fixed.stats["envelope_history"] == []


def test_the_epoch_line_reports_thinned_rows_only_when_there_are_some(caplog):
    from types import SimpleNamespace

    from rsft.run.callbacks import SamplingStatsLogger

    def epoch_line(thinned):
        stats = {"accepted": 50, "proposals": 150, "acceptance_rate": 1 / 3, "seconds": 0.1, "log_M": 1.0}
        stats["thinned"] = thinned
        trainer = SimpleNamespace(is_global_zero=True, current_epoch=0)
        caplog.clear()
        logger = SamplingStatsLogger()
        logger.on_round(0, stats, {})  # what the data module hands it after the round
        with caplog.at_level("INFO", logger="rsft"):
            logger.on_train_epoch_start(trainer, SimpleNamespace(log_dict=lambda *a, **k: None))
        return caplog.messages[-1]

    assert "7 thinned after envelope raises" in epoch_line(7)
    assert "thinned" not in epoch_line(0)
