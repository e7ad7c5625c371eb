"""Fairness with K groups: the resampling rules on a 3-group table (calibrated χ² tests), the weighted fit,
fairlearn's methods, and the metrics against hand-computed values (REFERENCES §9).

Calibration: the rules' accepted rows are compared with the cell law they must follow, P(g) P(y) for every
(group, label) cell, by a χ² goodness-of-fit test with 5 degrees of freedom. Accepted rows of ``reweighing``
are i.i.d. from that law, so the p-value is uniform and failing when p < 1e-6 is a false failure with
probability 1e-6 (any seed). ``uniform_sampling`` keeps fixed quotas (less spread than multinomial draws) and
``preferential_sampling`` draws from its copy counts, whose cell sums are the expected sizes rounded: their
statistic is at most as spread, so the false-failure rate is ≤ 1e-6 as well. Power: the same test on the
rows ``acceptance=all`` keeps (the table's own cells, P(y=1 | g) = 0.6 / 0.35 / 0.2) gives p < 1e-100.
Mutations that fail these tests (each tried): W(g, y) without the P(g) factor (reweighing: p ≈ 0); uniform
quotas from the observed cell shares instead of E(g, y) (p ≈ 0); preferential copies whose expected count uses
the group's own size squared (p ≈ 0); the worst-group DI without folding DI > 1 (the hand example).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from rsft.acceptance.base import AcceptAll
from rsft.acceptance.fairness import (
    EmptyCellError,
    PreferentialSampling,
    Reweighing,
    UniformSampling,
    cell_counts,
    preferential_copies,
    reweighing_table,
    reweighing_weights,
)
from rsft.metrics.fairness import (
    average_odds_difference,
    classification_report,
    disparate_impact,
    equal_opportunity_difference,
    group_rates,
    statistical_parity_difference,
)
from rsft.metrics.fairness_report import FairnessReport, max_abs_label_spd, parity, per_group
from rsft.models.fairlearn_baseline import FairlearnBaseline
from rsft.models.tabular import LogisticRegression
from rsft.proposals.dataset import DatasetProposal
from rsft.sampling import rejection_sample

ALPHA = 1e-6
SIZES = (1500, 900, 600)
FAVOURABLE_RATES = (0.6, 0.35, 0.2)


def three_groups() -> SimpleNamespace:
    """A training split of 3,000 rows in three groups with different favourable rates; x[:, 0] is a score."""
    g = torch.Generator().manual_seed(7)
    s = torch.cat([torch.full((n,), i) for i, n in enumerate(SIZES)])
    y = torch.cat([(torch.rand(n, generator=g) < p).long() for n, p in zip(SIZES, FAVOURABLE_RATES)])
    score = (0.5 * y + 0.5 * torch.rand(len(y), generator=g)).float()
    rows = {"x": torch.stack([score, torch.randn(len(y), generator=g)], 1), "y": y, "s": s}
    return SimpleNamespace(train=rows, groups=("g=a", "g=b", "g=c"), group_keys=("a", "b", "c"), reference=0)


def independent_law(rows) -> np.ndarray:
    """P(g) P(y) per cell (order (0,0), (0,1), (1,0), ...), from the training rows."""
    counts = cell_counts(rows["s"], rows["y"], 3).double()
    n = counts.sum()
    return (counts.sum(1, keepdim=True) * counts.sum(0, keepdim=True) / n**2).flatten().numpy()


def chi2_pvalue(accepted, law: np.ndarray) -> float:
    observed = cell_counts(accepted["s"], accepted["y"], 3).flatten().numpy()
    return float(chisquare(observed, f_exp=law * observed.sum()).pvalue)


def sample(rule, data, n=30_000, seed=0):
    return rejection_sample(DatasetProposal(data), rule, num_accepted=n, chunk_size=8192, seed=seed).batch


class ScoreRanker(torch.nn.Module):
    """A 'model' whose probability of the favourable label is the first feature."""

    device = torch.device("cpu")

    def predict_proba(self, x):
        return x[:, 0]


def test_reweighing_three_groups_by_hand():
    # cells [g, y]: (0,0) 1, (0,1) 3, (1,0) 2, (1,1) 2, (2,0) 3, (2,1) 1; n = 12, |y=0| = |y=1| = 6, |g| = 4 each
    s = torch.tensor([0] * 4 + [1] * 4 + [2] * 4)
    y = torch.tensor([0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 1])
    w = reweighing_weights(s, y)
    expected = torch.tensor(
        [[(4 * 6 / 12) / c for c in pair] for pair in ((1, 3), (2, 2), (3, 1))], dtype=torch.float64
    )
    assert torch.allclose(w, expected)
    assert torch.allclose(
        torch.tensor(reweighing_table({"s": s, "y": y, "x": torch.zeros(12, 1)}), dtype=torch.float64), expected
    )
    with pytest.raises(EmptyCellError, match=r"\(g=c, y=1\)"):
        rows = {"s": s, "y": torch.where(s == 2, 0, y), "x": torch.zeros(12, 1)}
        Reweighing(SimpleNamespace(train=rows, groups=("g=a", "g=b", "g=c")))


def test_reweighing_accepts_every_cell_at_its_independent_share():
    data = three_groups()
    law = independent_law(data.train)
    p = chi2_pvalue(sample(Reweighing(data), data), law)
    assert p > ALPHA, p
    assert chi2_pvalue(sample(AcceptAll(), data), law) < 1e-100  # the test has power: the raw cells fail it


def test_uniform_sampling_keeps_three_groups_at_their_independent_quotas():
    data = three_groups()
    rule = UniformSampling(data)
    law = independent_law(data.train)
    accepted = sample(rule, data)
    assert chi2_pvalue(accepted, law) > ALPHA
    assert rule.fractions.numpy() == pytest.approx(law)
    # within one chunk, every cell is its quota up to one row of flooring
    batch = DatasetProposal(data).sample(8192, torch.Generator().manual_seed(1))
    kept = rule.accept(batch, torch.Generator().manual_seed(1))
    cells = cell_counts(batch["s"][kept], batch["y"][kept], 3).flatten().double()
    assert torch.all((cells - rule.fractions * cells.sum()).abs() <= 1.0 + 1e-9)


def test_preferential_sampling_three_groups_borderline_rows_by_hand():
    s = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    y = torch.tensor([1, 1, 0, 1, 0, 0, 0, 0, 0, 1])
    scores = torch.tensor([0.9, 0.4, 0.3, 0.8, 0.6, 0.2, 0.7, 0.1, 0.5, 0.55])
    # n = 10, |y=1| = 4, |y=0| = 6. Expected E = round(|g||y|/n):
    #   g0 (3 rows): y=1 1.2 → 1 (has 2: drop the lower score 0.4), y=0 1.8 → 2 (has 1: 2 copies)
    #   g1 (3 rows): y=1 1.2 → 1 (has 1), y=0 1.8 → 2 (has 2)
    #   g2 (4 rows): y=1 1.6 → 2 (has 1: 2 copies), y=0 2.4 → 2 (has 3: drop the highest score 0.7)
    copies = preferential_copies(scores, s, y)
    assert copies.tolist() == [1, 0, 2, 1, 1, 1, 0, 1, 1, 2]


def test_preferential_sampling_accepts_cells_at_their_rounded_expected_sizes():
    data = three_groups()
    rule = PreferentialSampling(data)
    rule.bind(ScoreRanker())
    rule.start()
    rows = data.train
    sums = torch.stack([rule.copies[(rows["s"] == g) & (rows["y"] == j)].sum() for g in range(3) for j in (0, 1)])
    law = independent_law(rows)
    accepted = sample(rule, data)
    assert chi2_pvalue(accepted, law) > ALPHA
    assert chi2_pvalue(accepted, sums.double().numpy() / float(sums.sum())) > ALPHA
    assert (sums.double().numpy() - law * len(rows["y"])) == pytest.approx(np.zeros(6), abs=0.5)  # rounding only
    # the rows dropped are the most borderline of their cell: in group 0's favourable cell (over-represented),
    # every dropped row scores below every kept one
    cell = (rows["s"] == 0) & (rows["y"] == 1)
    dropped, kept = rows["x"][cell & (rule.copies == 0), 0], rows["x"][cell & (rule.copies > 0), 0]
    assert dropped.numel() > 0 and float(dropped.max()) <= float(kept.min())


def test_weighted_fit_takes_one_weight_per_group_and_label():
    data = three_groups()
    weights = reweighing_table(data)
    model = LogisticRegression(2, cell_weights=weights, groups=("a", "b", "c"), reference=0)
    batch = {k: v[:50] for k, v in data.train.items()}
    logits = model(batch["x"]).detach()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["y"].float(), reduction="none")
    w = torch.tensor(weights, dtype=torch.float32)[batch["s"], batch["y"]]
    assert float(model.training_loss(batch).detach()) == pytest.approx(float((w * bce).mean()), rel=1e-6)
    with pytest.raises(ValueError, match="model.net.cell_weights must be a 3×2 table"):
        LogisticRegression(2, cell_weights=[[1.0, 1.0], [1.0, 1.0]], groups=("a", "b", "c"), reference=0)


@pytest.mark.parametrize("method", ["exponentiated_gradient_dp", "threshold_optimizer_dp"])
def test_fairlearn_dp_methods_take_three_groups(method):
    g = np.random.default_rng(0)
    n = 900
    s = g.integers(0, 3, size=n)
    x = g.normal(size=(n, 2)) + np.stack([0.8 * s, np.zeros(n)], 1)
    y = (x[:, 0] + 0.5 * x[:, 1] + 0.3 * g.normal(size=n) > 0.8).astype(np.int64)
    rows = {"x": torch.tensor(x, dtype=torch.float32), "y": torch.tensor(y), "s": torch.tensor(s)}
    model = FairlearnBaseline(SimpleNamespace(train=rows), method=method, seed=1, groups=("a", "b", "c"), reference=2)
    model.pretrain(None, 1, 1, torch.Generator())
    d = model.scores(rows)
    rates = [float(d[rows["s"] == k].mean()) for k in range(3)]
    plain = [float(y[s == k].mean()) for k in range(3)]
    assert max(plain) - min(plain) > 0.4  # the labels' gap the methods must close
    assert max(rates) - min(rates) < 0.1, rates


# -- metrics ---------------------------------------------------------------------------------------------
# 12 rows, three groups of four.
#   g0: y = 1 1 0 0, ŷ = 1 0 0 0 → selection 1/4, TPR 1/2, FPR 0
#   g1: y = 1 0 0 0, ŷ = 1 1 0 0 → selection 2/4, TPR 1,   FPR 1/3
#   g2: y = 1 1 1 0, ŷ = 1 1 0 1 → selection 3/4, TPR 2/3, FPR 1
S = torch.tensor([0] * 4 + [1] * 4 + [2] * 4)
Y = torch.tensor([1, 1, 0, 0, 1, 0, 0, 0, 1, 1, 1, 0])
D = torch.tensor([1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 0, 1])
HAND = {
    0: {"selection_rate": 1 / 4, "tpr": 1 / 2, "fpr": 0.0},
    1: {"selection_rate": 2 / 4, "tpr": 1.0, "fpr": 1 / 3},
    2: {"selection_rate": 3 / 4, "tpr": 2 / 3, "fpr": 1.0},
}
KEYS = ("a", "b", "c")


def test_group_rates_of_three_groups_by_hand():
    rates = group_rates(D, Y, S, num_groups=3)
    for g in range(3):
        assert rates[g] == pytest.approx(
            {"positive_rate": HAND[g]["selection_rate"], **{k: HAND[g][k] for k in ("tpr", "fpr")}}
        )
    for use_fairlearn in (True, False):
        got = per_group(D, Y, S, use_fairlearn=use_fairlearn, num_groups=3)
        for g in range(3):
            assert got[g] == pytest.approx({"n": 4, **HAND[g]})
    with pytest.raises(ValueError, match="no rows with sensitive attribute s = 1"):
        group_rates(D[S != 1], Y[S != 1], S[S != 1], num_groups=3)  # an absent group is an error, never a shift


def test_every_group_against_the_reference_and_the_worst_group_by_hand():
    report = classification_report(D.float(), Y, S, 0.5, reference=2, group_keys=KEYS)
    assert report["disparate_impact/a"] == pytest.approx((1 / 4) / (3 / 4))
    assert report["disparate_impact/b"] == pytest.approx((2 / 4) / (3 / 4))
    assert report["statistical_parity_difference/a"] == pytest.approx(-1 / 2)
    assert report["statistical_parity_difference/b"] == pytest.approx(-1 / 4)
    assert report["equal_opportunity_difference/a"] == pytest.approx(1 / 2 - 2 / 3)
    assert report["equal_opportunity_difference/b"] == pytest.approx(1 - 2 / 3)
    assert report["average_odds_difference/a"] == pytest.approx(0.5 * ((0 - 1) + (1 / 2 - 2 / 3)))
    assert report["average_odds_difference/b"] == pytest.approx(0.5 * ((1 / 3 - 1) + (1 - 2 / 3)))
    assert "disparate_impact/c" not in report and "disparate_impact" not in report  # no pair for the reference
    assert report["selection_rate/c"] == pytest.approx(3 / 4) and report["fpr/a"] == 0.0
    assert report["worst_group_disparate_impact"] == pytest.approx(1 / 3)
    assert report["max_abs_statistical_parity_difference"] == pytest.approx(1 / 2)
    assert report["max_abs_average_odds_difference"] == pytest.approx(7 / 12)
    assert report["max_abs_equal_opportunity_difference"] == pytest.approx(1 / 3)
    # against group a: DI of b = 2, of c = 3; taken ≤ 1 they are 1/2 and 1/3, so the worst group is c at 1/3
    other = classification_report(D.float(), Y, S, 0.5, reference=0, group_keys=KEYS)
    assert other["disparate_impact/c"] == pytest.approx(3.0)
    assert other["worst_group_disparate_impact"] == pytest.approx(1 / 3)
    assert parity(D, Y, S, reference=2, group_keys=KEYS)["worst_group_disparate_impact"] == pytest.approx(1 / 3)


def test_two_groups_keep_aif360s_names_and_values():
    s, y, d = S[S < 2], Y[S < 2], D[S < 2]  # groups a (unprivileged, 0) and b (privileged, 1)
    report = classification_report(d.float(), y, s, 0.5)
    assert report["disparate_impact"] == report["disparate_impact/0"] == pytest.approx((1 / 4) / (2 / 4))
    assert report["statistical_parity_difference"] == pytest.approx(1 / 4 - 2 / 4)
    assert report["worst_group_disparate_impact"] == pytest.approx(1 / 2)
    # on random decisions, the plain names are exactly AIF360's unprivileged − privileged functions
    g = torch.Generator().manual_seed(0)
    s2, y2, d2 = (torch.randint(0, 2, (1000,), generator=g) for _ in range(3))
    plain = classification_report(d2.float(), y2, s2, 0.5)
    assert plain["statistical_parity_difference"] == statistical_parity_difference(d2, s2)
    assert plain["disparate_impact"] == disparate_impact(d2, s2)
    assert plain["average_odds_difference"] == average_odds_difference(d2, y2, s2)
    assert plain["equal_opportunity_difference"] == equal_opportunity_difference(d2, y2, s2)
    flipped = classification_report(d.float(), y, s, 0.5, reference=0)  # the other group against group 0
    assert flipped["disparate_impact"] == pytest.approx(2.0)
    assert flipped["worst_group_disparate_impact"] == pytest.approx(0.5)


def test_undefined_figures_are_left_out_of_the_worst_group():
    # group 1 has no favourable label: its TPR (and so EOD, AOD) is undefined; its selection rate is not
    s = torch.tensor([0, 0, 1, 1, 2, 2])
    y = torch.tensor([1, 0, 0, 0, 1, 0])
    d = torch.tensor([1, 0, 1, 0, 0, 0])
    report = classification_report(d.float(), y, s, 0.5, reference=0, group_keys=KEYS)
    assert math.isnan(report["equal_opportunity_difference/b"])
    assert report["max_abs_equal_opportunity_difference"] == pytest.approx(1.0)  # group c only: TPR 0 vs 1
    assert report["worst_group_disparate_impact"] == 0.0  # group c is never selected: DI 0


def test_the_report_lists_every_group(tmp_path):
    data = three_groups()
    report = FairnessReport(data)
    report.snapshots["before"] = {
        "threshold": 0.5,
        "groups": per_group(D, Y, S, num_groups=3),
        "parity": parity(D, Y, S, reference=0, group_keys=KEYS),
    }
    report.epochs = [(0, [500, 500, 400, 250, 350, 150])]
    md, png = report.write(tmp_path)
    text = md.read_text()
    for line in ("| g=a (s=0, reference) | 4 |", "| g=b (s=1) | 4 |", "| g=c (s=2) | 4 |"):
        assert line in text
    assert "| g=b (s=1) | 0.25 | n/a | 2 | n/a |" in text  # the parity row: SPD and DI against a, before only
    assert "| accepted, epoch 0 | 2150 | 500 | 500 | 400 | 250 | 350 | 150 | 0.2 |" in text  # max abs label SPD
    assert max_abs_label_spd([500, 500, 400, 250, 350, 150], 0) == pytest.approx(abs(0.3 - 0.5))
    assert png.stat().st_size > 20_000
