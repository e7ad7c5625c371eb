"""Group-fairness and accuracy metrics of binary decisions, as AIF360 defines them, for two or K groups.

Conventions (AIF360's): label and decision 1 = favourable; differences are group − reference, ratios
group / reference. A shipped binary attribute has s = 0 unprivileged, s = 1 privileged = the reference, so
the figures are AIF360's unprivileged − privileged. With K groups (s = 0..K-1: the values of an attribute, or
the value tuples of several), every group is compared with the reference group, and the worst group sums
them up (REFERENCES §9): ``worst_group_disparate_impact`` = min over groups of min(DI, 1/DI) (≤ 1; 1 = parity),
``max_abs_statistical_parity_difference`` = max |SPD|, and the same max |·| of AOD and EOD; a group whose
figure is undefined (NaN: a rate of 0/0) is left out of the worst-group figure (NaN when every group is).

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


#: The figures of one group against the reference group (for two groups, the unsuffixed metric names).
PAIR_METRICS = (
    "statistical_parity_difference",
    "disparate_impact",
    "average_odds_difference",
    "equal_opportunity_difference",
)
#: The worst group over all groups against the reference.
WORST_GROUP_METRICS = (
    "worst_group_disparate_impact",
    "max_abs_statistical_parity_difference",
    "max_abs_average_odds_difference",
    "max_abs_equal_opportunity_difference",
)
#: The per-group rates, logged as ``<split>/<rate>/<group>``.
GROUP_RATES = ("selection_rate", "tpr", "fpr")


def _check(decisions: torch.Tensor, y: torch.Tensor, s: torch.Tensor, num_groups: int = 2) -> None:
    if not (decisions.shape == y.shape == s.shape) or decisions.dim() != 1:
        raise ValueError(
            f"decisions, labels and sensitive attribute must be 1-D of one length, got shapes "
            f"{tuple(decisions.shape)}, {tuple(y.shape)}, {tuple(s.shape)}"
        )
    for name, values in (("labels y", y), ("decisions", decisions)):
        if bool(((values != 0) & (values != 1)).any()):
            raise ValueError(f"{name} must be binary 0/1, got values {torch.unique(values).tolist()[:10]}")
    if bool(((s < 0) | (s >= num_groups)).any()):
        what = "binary 0/1" if num_groups == 2 else f"a group id in 0..{num_groups - 1}"
        raise ValueError(f"sensitive attribute s must be {what}, got values {torch.unique(s).tolist()[:10]}")


def _ratio(num: float, den: float) -> float:
    if den == 0:
        return math.nan if num == 0 else math.inf
    return num / den


def group_rates(
    decisions: torch.Tensor, y: torch.Tensor, s: torch.Tensor, num_groups: int = 2
) -> dict[int, dict[str, float]]:
    """For every group s = 0..K-1: favourable-decision rate, true-positive rate and false-positive rate."""
    _check(decisions, y, s, num_groups)
    for group in range(num_groups):
        # checked first: torchmetrics numbers the groups present, so an absent group would shift the others
        if not bool((s == group).any()):
            raise ValueError(f"no rows with sensitive attribute s = {group}: group metrics need every group")
    # torchmetrics orders each group's figures as tp, fp, tn, fn (fractions of the group's size).
    stats = binary_groups_stat_rates(decisions.float(), y.long(), s.long(), num_groups=num_groups)
    out = {}
    for group in range(num_groups):
        tp, fp, tn, fn = (float(v) for v in stats[f"group_{group}"])
        out[group] = {"positive_rate": tp + fp, "tpr": _ratio(tp, tp + fn), "fpr": _ratio(fp, fp + tn)}
    return out


def pair_figures(
    selection: dict[int, dict[str, float]], rates: dict[int, dict[str, float]], group: int, reference: int
) -> dict[str, float]:
    """SPD, DI, AOD and EOD of ``group`` against ``reference``. ``selection`` holds the favourable-decision
    rates (:func:`group_rates` of the decisions against themselves, as AIF360 computes them), ``rates`` the
    TPR and FPR (against the labels)."""
    g, r = rates[group], rates[reference]
    return {
        "statistical_parity_difference": selection[group]["positive_rate"] - selection[reference]["positive_rate"],
        "disparate_impact": _ratio(selection[group]["positive_rate"], selection[reference]["positive_rate"]),
        "average_odds_difference": 0.5 * ((g["fpr"] - r["fpr"]) + (g["tpr"] - r["tpr"])),
        "equal_opportunity_difference": g["tpr"] - r["tpr"],
    }


def worst_group(pairs: dict[int, dict[str, float]]) -> dict[str, float]:
    """The worst group's figures (module docstring) from every non-reference group's :func:`pair_figures`."""

    def defined(values: list[float]) -> list[float]:
        return [v for v in values if not math.isnan(v)]

    di = defined([min(p["disparate_impact"], _ratio(1.0, p["disparate_impact"])) for p in pairs.values()])
    out = {"worst_group_disparate_impact": min(di) if di else math.nan}
    for name in ("statistical_parity_difference", "average_odds_difference", "equal_opportunity_difference"):
        values = defined([abs(p[name]) for p in pairs.values()])
        out[f"max_abs_{name}"] = max(values) if values else math.nan
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


def classification_report(
    scores: torch.Tensor,
    y: torch.Tensor,
    s: torch.Tensor,
    threshold: float,
    reference: int = 1,
    group_keys: tuple[str, ...] | None = None,
) -> dict[str, float]:
    """The metrics of decisions ``scores > threshold`` with groups ``s`` (0..K-1, K = len(group_keys), default 2)
    against the ``reference`` group: accuracy, balanced accuracy, the Theil index, the worst-group figures,
    ``<rate>/<group key>`` per group and ``<pair metric>/<group key>`` per non-reference group. With two groups
    the pair metrics of the other group also come under their plain names (:data:`METRIC_NAMES`: AIF360's
    unprivileged − privileged figures for a shipped binary attribute)."""
    keys = tuple(group_keys) if group_keys else ("0", "1")
    k = len(keys)
    if not 0 <= reference < k:
        raise ValueError(f"the reference group {reference} is not one of the {k} groups")
    decisions = (scores > threshold).long()
    _check(decisions, y, s, k)
    selection = group_rates(decisions, decisions, s, k)  # favourable-decision rates, as AIF360 computes them
    rates = group_rates(decisions, y, s, k)
    pairs = {g: pair_figures(selection, rates, g, reference) for g in range(k) if g != reference}
    report = {"accuracy": float((decisions == y).double().mean()), "balanced_accuracy": balanced_accuracy(decisions, y)}
    if k == 2:
        report.update(pairs[1 - reference])
    report["theil_index"] = theil_index(decisions, y)
    report.update(worst_group(pairs))
    for g, key in enumerate(keys):
        report[f"selection_rate/{key}"] = selection[g]["positive_rate"]
        report[f"tpr/{key}"] = rates[g]["tpr"]
        report[f"fpr/{key}"] = rates[g]["fpr"]
    for g, figures in pairs.items():
        report.update({f"{name}/{keys[g]}": value for name, value in figures.items()})
    return report
