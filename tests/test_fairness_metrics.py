"""Fairness metrics against hand-computed examples (AIF360's definitions)."""

from __future__ import annotations

import math

import pytest
import torch

from rsft.metrics.fairness import (
    average_odds_difference,
    balanced_accuracy,
    best_threshold,
    classification_report,
    disparate_impact,
    equal_opportunity_difference,
    group_rates,
    statistical_parity_difference,
    theil_index,
)

# Ten rows. Unprivileged (s = 0): rows 0-4; privileged (s = 1): rows 5-9.
#   s=0: y = 1 1 0 0 0, ŷ = 1 0 1 0 0  → TP 1, FN 1, FP 1, TN 2; favourable rate 2/5; TPR 1/2; FPR 1/3
#   s=1: y = 1 1 1 0 0, ŷ = 1 1 0 1 0  → TP 2, FN 1, FP 1, TN 1; favourable rate 3/5; TPR 2/3; FPR 1/2
S = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
Y = torch.tensor([1, 1, 0, 0, 0, 1, 1, 1, 0, 0])
D = torch.tensor([1, 0, 1, 0, 0, 1, 1, 0, 1, 0])


def test_group_rates_by_hand():
    rates = group_rates(D, Y, S)
    assert rates[0] == pytest.approx({"positive_rate": 2 / 5, "tpr": 1 / 2, "fpr": 1 / 3})
    assert rates[1] == pytest.approx({"positive_rate": 3 / 5, "tpr": 2 / 3, "fpr": 1 / 2})


def test_parity_and_odds_by_hand():
    assert statistical_parity_difference(D, S) == pytest.approx(2 / 5 - 3 / 5)
    assert disparate_impact(D, S) == pytest.approx((2 / 5) / (3 / 5))
    assert equal_opportunity_difference(D, Y, S) == pytest.approx(1 / 2 - 2 / 3)
    assert average_odds_difference(D, Y, S) == pytest.approx(0.5 * ((1 / 3 - 1 / 2) + (1 / 2 - 2 / 3)))


def test_balanced_accuracy_by_hand():
    # overall: TP 3 of 5 positives, TN 3 of 5 negatives
    assert balanced_accuracy(D, Y) == pytest.approx(0.5 * (3 / 5 + 3 / 5))
    # unbalanced classes: y = 1 1 1 0, ŷ = 1 1 1 1 → TPR 1, TNR 0
    assert balanced_accuracy(torch.tensor([1, 1, 1, 1]), torch.tensor([1, 1, 1, 0])) == pytest.approx(0.5)


def test_theil_index_by_hand():
    # b = ŷ − y + 1 = [1, 0, 2, 1]; mean 1; index = mean(b ln b) = (0 + 0 + 2 ln 2 + 0) / 4
    assert theil_index(torch.tensor([1, 0, 1, 0]), torch.tensor([1, 1, 0, 0])) == pytest.approx(2 * math.log(2) / 4)
    # every decision right: b = 1 everywhere, index 0
    assert theil_index(Y, Y) == pytest.approx(0.0)


def test_disparate_impact_with_no_privileged_favourable_decisions():
    assert disparate_impact(torch.tensor([1, 0, 0, 0]), torch.tensor([0, 0, 1, 1])) == math.inf


def test_best_threshold_maximises_balanced_accuracy_first_on_ties():
    scores = torch.tensor([0.10, 0.35, 0.40, 0.80, 0.90])
    y = torch.tensor([0, 0, 1, 1, 1])
    t = best_threshold(scores, y)
    # decisions are score > t: any t in [0.35, 0.40) separates perfectly; grid point k is 0.01 + k·0.98/99,
    # and the first one ≥ 0.35 is k = 35 (k = 34 gives 0.3466 < 0.35, which misclassifies the 0.35 row)
    assert 0.35 <= t < 0.40
    assert t == pytest.approx(0.01 + 35 * 0.98 / 99, abs=1e-6)
    assert classification_report(scores, y, torch.tensor([0, 1, 0, 1, 0]), t)["balanced_accuracy"] == 1.0


def test_report_names_and_bad_input():
    report = classification_report(D.float() * 0.8 + 0.1, Y, S, 0.5)
    assert report["statistical_parity_difference"] == pytest.approx(-0.2)
    assert report["accuracy"] == pytest.approx(6 / 10)
    with pytest.raises(ValueError, match="sensitive attribute s must be binary"):
        classification_report(torch.rand(4), torch.tensor([0, 1, 0, 1]), torch.tensor([0, 1, 2, 1]), 0.5)
    with pytest.raises(ValueError, match="no rows with sensitive attribute s = 1"):
        group_rates(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([0, 0]))
