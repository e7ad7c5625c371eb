"""Group-fairness and accuracy metrics of binary decisions, as AIF360 defines them.

Conventions (AIF360's): label and decision 1 = favourable; sensitive attribute ``s`` 1 = privileged,
0 = unprivileged; differences are unprivileged − privileged, ratios unprivileged / privileged.

Per-group confusion rates come from torchmetrics (``binary_groups_stat_rates``); balanced accuracy
from torchmetrics' recall and specificity. The parity figures and the Theil index are written here
(tests check each against hand-computed examples).
"""

from __future__ import annotations

import math

import torch
from torchmetrics.functional.classification import binary_groups_stat_rates, binary_recall, binary_specificity

#: AIF360's demo scans these thresholds on the validation set and keeps the best balanced accuracy.
THRESHOLD_GRID = torch.linspace(0.01, 0.99, 100)

METRIC_NAMES = (
    "accuracy",
    "balanced_accuracy",
    "statistical_parity_difference",
    "disparate_impact",
    "average_odds_difference",
    "equal_opportunity_difference",
    "theil_index",
)


def _check(decisions: torch.Tensor, y: torch.Tensor, s: torch.Tensor) -> None:
    if not (decisions.shape == y.shape == s.shape) or decisions.dim() != 1:
        raise ValueError(
            f"decisions, labels and sensitive attribute must be 1-D of one length, got shapes "
            f"{tuple(decisions.shape)}, {tuple(y.shape)}, {tuple(s.shape)}"
        )
    for name, values in (("sensitive attribute s", s), ("labels y", y), ("decisions", decisions)):
        if bool(((values != 0) & (values != 1)).any()):
            raise ValueError(f"{name} must be binary 0/1, got values {torch.unique(values).tolist()[:10]}")


def _ratio(num: float, den: float) -> float:
    if den == 0:
        return math.nan if num == 0 else math.inf
    return num / den


def group_rates(decisions: torch.Tensor, y: torch.Tensor, s: torch.Tensor) -> dict[int, dict[str, float]]:
    """For s = 0 and s = 1: favourable-decision rate, true-positive rate and false-positive rate."""
    _check(decisions, y, s)
    # torchmetrics orders each group's figures as tp, fp, tn, fn (fractions of the group's size).
    stats = binary_groups_stat_rates(decisions.float(), y.long(), s.long(), num_groups=2)
    out = {}
    for group in (0, 1):
        if f"group_{group}" not in stats or not bool((s == group).any()):
            raise ValueError(f"no rows with sensitive attribute s = {group}: group metrics need both groups")
        tp, fp, tn, fn = (float(v) for v in stats[f"group_{group}"])
        out[group] = {"positive_rate": tp + fp, "tpr": _ratio(tp, tp + fn), "fpr": _ratio(fp, fp + tn)}
    return out


def statistical_parity_difference(decisions: torch.Tensor, s: torch.Tensor) -> float:
    """P(ŷ = 1 | s = 0) − P(ŷ = 1 | s = 1). Applied to labels, it is the data set's parity difference."""
    rates = group_rates(decisions, decisions, s)
    return rates[0]["positive_rate"] - rates[1]["positive_rate"]


def disparate_impact(decisions: torch.Tensor, s: torch.Tensor) -> float:
    """P(ŷ = 1 | s = 0) / P(ŷ = 1 | s = 1)."""
    rates = group_rates(decisions, decisions, s)
    return _ratio(rates[0]["positive_rate"], rates[1]["positive_rate"])


def average_odds_difference(decisions: torch.Tensor, y: torch.Tensor, s: torch.Tensor) -> float:
    """½[(FPR₀ − FPR₁) + (TPR₀ − TPR₁)]."""
    r = group_rates(decisions, y, s)
    return 0.5 * ((r[0]["fpr"] - r[1]["fpr"]) + (r[0]["tpr"] - r[1]["tpr"]))


def equal_opportunity_difference(decisions: torch.Tensor, y: torch.Tensor, s: torch.Tensor) -> float:
    """TPR₀ − TPR₁."""
    r = group_rates(decisions, y, s)
    return r[0]["tpr"] - r[1]["tpr"]


def theil_index(decisions: torch.Tensor, y: torch.Tensor) -> float:
    """Generalized entropy index with α = 1 on benefits b = ŷ − y + 1: mean((b/μ) ln(b/μ)), 0 ln 0 = 0."""
    b = decisions.double() - y.double() + 1.0
    mu = b.mean()
    ratio = b / mu
    terms = torch.where(
        ratio > 0, ratio * torch.log(torch.where(ratio > 0, ratio, torch.ones_like(ratio))), torch.zeros_like(ratio)
    )
    return float(terms.mean())


def balanced_accuracy(decisions: torch.Tensor, y: torch.Tensor) -> float:
    """½(TPR + TNR)."""
    return 0.5 * float(binary_recall(decisions.float(), y.long()) + binary_specificity(decisions.float(), y.long()))


def best_threshold(scores: torch.Tensor, y: torch.Tensor, grid: torch.Tensor = THRESHOLD_GRID) -> float:
    """The threshold of ``grid`` (decide favourable when score > threshold) with the highest balanced
    accuracy; the first one on ties (as AIF360's demo picks it)."""
    decisions = scores[None, :] > grid.to(scores.device)[:, None]  # (thresholds, rows)
    positives = (y == 1).sum().clamp(min=1)
    negatives = (y == 0).sum().clamp(min=1)
    tpr = (decisions & (y == 1)).sum(1) / positives
    tnr = (~decisions & (y == 0)).sum(1) / negatives
    return float(grid[int(torch.argmax(0.5 * (tpr + tnr)))])


def classification_report(scores: torch.Tensor, y: torch.Tensor, s: torch.Tensor, threshold: float) -> dict[str, float]:
    """Every metric of :data:`METRIC_NAMES` for decisions ``scores > threshold``."""
    decisions = (scores > threshold).long()
    _check(decisions, y, s)
    return {
        "accuracy": float((decisions == y).double().mean()),
        "balanced_accuracy": balanced_accuracy(decisions, y),
        "statistical_parity_difference": statistical_parity_difference(decisions, s),
        "disparate_impact": disparate_impact(decisions, s),
        "average_odds_difference": average_odds_difference(decisions, y, s),
        "equal_opportunity_difference": equal_opportunity_difference(decisions, y, s),
        "theil_index": theil_index(decisions, y),
    }
