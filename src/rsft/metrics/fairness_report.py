"""``fairness_report.md`` and ``fairness_report.png``: what a reviewer of a credit or diagnosis model asks to see.

A Lightning callback (``callbacks.fairness_report``, on in the decision experiments) that records

- the decisions per group on one evaluation split (``split``, default test) before fine-tuning (the
  ``trainer.validate`` run rsft makes first) and after it (the last validation): selection rate, true-
  and false-positive rate, group size, for every group (two, or K: the values of an attribute or the value
  tuples of several); every group's parity figures against the reference group and the worst group's
  (:mod:`rsft.metrics.fairness`);
- the accepted training set of every epoch per (group, label) cell against the original training split and
  against the sizes under independence (the reweighing target), and its label parity.

At the end of the fit it writes both files into the run directory (beside ``metrics.json``) and, when a
W&B logger is on, logs the PNG as an image and the two tables as W&B tables.

Definitions. The per-group rates come from ``fairlearn.metrics.MetricFrame`` (``selection_rate``,
``true_positive_rate``, ``false_positive_rate``: the same definitions as AIF360's per-group rates); when
fairlearn is not installed (it is the optional ``fairness`` extra) from :func:`rsft.metrics.fairness.group_rates`,
which gives the same numbers. The parity figures keep AIF360's definitions, which fairlearn does not
share: differences group − reference (fairlearn: max − min ≥ 0), DI = P(ŷ=1|group)/P(ŷ=1|reference)
(fairlearn's ``demographic_parity_ratio`` is min/max ≤ 1), AOD = ½[(FPR_g − FPR_ref) + (TPR_g − TPR_ref)].
For a shipped binary attribute the reference is the privileged group (s = 1): AIF360's unprivileged −
privileged.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pytorch_lightning as pl
import torch

from rsft.batch import Batch, field, require_methods, training_rows
from rsft.metrics.fairness import (
    METRIC_NAMES,
    PAIR_METRICS,
    WORST_GROUP_METRICS,
    classification_report,
    group_rates,
)

try:  # the optional fairness extra
    from fairlearn.metrics import MetricFrame, count, false_positive_rate, selection_rate, true_positive_rate
except ImportError:  # pragma: no cover - exercised only where fairlearn is absent
    MetricFrame = None

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend is chosen first: reports are written headless

RATES = ("selection_rate", "tpr", "fpr")
SHORT = {
    "disparate_impact": "DI",
    "statistical_parity_difference": "SPD",
    "average_odds_difference": "AOD",
    "equal_opportunity_difference": "EOD",
}


def per_group(
    decisions: torch.Tensor, y: torch.Tensor, s: torch.Tensor, use_fairlearn: bool = True, num_groups: int = 2
) -> dict:
    """{group: {"n", "selection_rate", "tpr", "fpr"}} for s = 0..K-1 (MetricFrame when available)."""
    if use_fairlearn and MetricFrame is not None:
        frame = MetricFrame(
            metrics={
                "n": count,
                "selection_rate": selection_rate,
                "tpr": true_positive_rate,
                "fpr": false_positive_rate,
            },
            y_true=y.cpu().numpy(),
            y_pred=decisions.cpu().numpy(),
            sensitive_features=s.cpu().numpy(),
        ).by_group
        missing = sorted(set(range(num_groups)) - {int(g) for g in frame.index})
        if missing:
            raise ValueError(f"no rows with sensitive attribute s = {missing[0]}: group metrics need every group")
        return {int(g): {k: float(frame.loc[g, k]) for k in ("n", *RATES)} for g in frame.index}
    rates = group_rates(decisions, y, s, num_groups)
    return {
        g: {"n": float((s == g).sum()), "selection_rate": r["positive_rate"], "tpr": r["tpr"], "fpr": r["fpr"]}
        for g, r in rates.items()
    }


def parity(
    decisions: torch.Tensor,
    y: torch.Tensor,
    s: torch.Tensor,
    reference: int = 1,
    group_keys: tuple[str, ...] | None = None,
) -> dict[str, float]:
    """The balanced accuracy, every group's parity figures against ``reference`` (``<metric>/<group key>``;
    with two groups also under the plain names, AIF360's) and the worst group's figures."""
    report = classification_report(decisions.float(), y, s, 0.5, reference, group_keys)
    drop = {"accuracy", "theil_index"}
    return {k: v for k, v in report.items() if k not in drop and k.split("/")[0] not in RATES}


def cell_counts(s: torch.Tensor, y: torch.Tensor, num_groups: int = 2) -> list[int]:
    """Rows per (group, label) cell, in the order (0, 0), (0, 1), (1, 0), (1, 1), ..., (K-1, 1)."""
    return [int(((s == g) & (y == label)).sum()) for g in range(num_groups) for label in (0, 1)]


def label_rates(counts: list[int]) -> list[float]:
    """P(y = 1 | group) of a set with these cell counts (NaN for a group with no rows)."""
    return [
        counts[2 * g + 1] / (counts[2 * g] + counts[2 * g + 1]) if counts[2 * g] + counts[2 * g + 1] else math.nan
        for g in range(len(counts) // 2)
    ]


def label_spd(counts: list[int], reference: int = 1) -> float:
    """Two groups: P(y=1 | the other group) − P(y=1 | reference) of a set with these cell counts (for a shipped
    binary attribute P(y=1 | s=0) − P(y=1 | s=1))."""
    rates = label_rates(counts)
    return rates[1 - reference] - rates[reference]


def max_abs_label_spd(counts: list[int], reference: int) -> float:
    """max over groups of |P(y=1 | group) − P(y=1 | reference)| of a set with these cell counts."""
    rates = label_rates(counts)
    gaps = [abs(r - rates[reference]) for g, r in enumerate(rates) if g != reference and not math.isnan(r)]
    return max(gaps) if gaps and not math.isnan(rates[reference]) else math.nan


class FairnessReport(pl.Callback):
    """Collects the figures during the run and writes ``fairness_report.md`` + ``.png`` at the end of the fit.

    ``data`` is the task's split: its training rows, and (when it names them) its ``groups``, ``group_keys``
    and ``reference``; a plain dict of rows has two groups, s = 1 the reference."""

    def __init__(self, data: Any, split: str = "test", use_fairlearn: bool = True):
        rows = training_rows(data)
        for name in ("s", "y"):
            field(rows, name, "callbacks.fairness_report (on the task's training split)", "use task=decisions")
        self.dataset = str(getattr(data, "dataset", "data"))
        self.sensitive = str(getattr(data, "sensitive", "s"))
        self.names = tuple(getattr(data, "groups", ("s=0", "s=1")))
        self.keys = tuple(getattr(data, "group_keys", ("0", "1")))
        self.reference = int(getattr(data, "reference", 1))
        default = "the data's reference" if hasattr(data, "reference") else "s = 1, the privileged group (AIF360's)"
        self.why = str(getattr(data, "records", {}).get("reference", {}).get("why", default))
        self.num_groups = len(self.names)
        self.split = split
        self.use_fairlearn = bool(use_fairlearn)
        self.original = cell_counts(rows["s"].long(), rows["y"].long(), self.num_groups)
        n = sum(self.original)
        by_group = [self.original[2 * g] + self.original[2 * g + 1] for g in range(self.num_groups)]
        by_label = [sum(self.original[label::2]) for label in (0, 1)]
        self.expected = [by_group[g] * by_label[label] / n for g in range(self.num_groups) for label in (0, 1)]
        self.snapshots: dict[str, dict[str, Any]] = {}  # "before" / "after" → groups, parity, threshold
        self.epochs: list[tuple[int, list[int]]] = []  # (epoch, accepted cell counts)
        self.written: tuple[Path, Path] | None = None

    # -- collecting --------------------------------------------------------------------------------
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        require_methods(
            pl_module,
            ("evaluation_data", "decision_threshold"),
            who="callbacks.fairness_report",
            fix="use a tabular decision model (model=logistic, mlp_tabular, logistic_weighted or fairlearn)",
        )
        if trainer.sanity_checking or not getattr(pl_module, "_collected", None):
            return
        data = pl_module.evaluation_data()
        if self.split not in data:
            raise ValueError(
                f"callbacks.fairness_report.split={self.split!r} is not an evaluation split; "
                f"model.net.eval_splits has {sorted(data)}"
            )
        threshold = pl_module.decision_threshold()
        scores, y, s = data[self.split]
        decisions = (scores > threshold).long()
        y, s = y.long(), s.long()
        key = "before" if trainer.state.fn == "validate" else "after"
        self.snapshots[key] = {
            "threshold": threshold,
            "groups": per_group(decisions, y, s, self.use_fairlearn, self.num_groups),
            "parity": parity(decisions, y, s, self.reference, self.keys),
        }

    def on_round(self, epoch: int, stats: dict[str, float], accepted: Batch) -> None:
        if accepted and "s" in accepted and "y" in accepted:
            # a round Lightning asks for again (a restarted epoch) replaces the epoch's earlier row
            self.epochs = [(e, c) for e, c in self.epochs if e != epoch]
            counts = cell_counts(accepted["s"].long(), accepted["y"].long(), self.num_groups)
            self.epochs.append((int(epoch), counts))

    # A resumed run writes the whole report: what was collected before the stop travels in the checkpoint.
    def state_dict(self) -> dict[str, Any]:
        return {"snapshots": self.snapshots, "epochs": [[e, list(c)] for e, c in self.epochs]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.snapshots = dict(state_dict.get("snapshots", {}))
        self.epochs = [(int(e), list(c)) for e, c in state_dict.get("epochs", [])]

    def on_fit_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if not trainer.is_global_zero:
            return
        directory = Path(trainer.default_root_dir)
        self.written = self.write(directory)
        for lg in trainer.loggers:
            if hasattr(lg, "log_image") and hasattr(lg, "log_table"):  # W&B
                lg.log_image(key="fairness_report/figure", images=[str(self.written[1])])
                lg.log_table(key="fairness_report/groups", columns=self.group_columns(), data=self.group_rows())
                lg.log_table(key="fairness_report/accepted_cells", columns=self.cell_columns(), data=self.cell_rows())

    # -- tables ------------------------------------------------------------------------------------
    def _value(self, when: str, *path: Any) -> Any:
        node: Any = self.snapshots.get(when)
        for part in path:
            if node is None:
                return math.nan
            node = node.get(part)
        return math.nan if node is None else node

    def group_label(self, g: int) -> str:
        return f"{self.names[g]} (s={g}{', reference' if g == self.reference else ''})"

    def group_columns(self) -> list[str]:
        return ["group", "n", *(f"{r} {w}" for r in RATES for w in ("before", "after"))]

    def group_rows(self) -> list[list[Any]]:
        first = next(iter(self.snapshots.values()), None)
        return [
            [
                self.group_label(g),
                int(first["groups"][g]["n"]) if first else 0,
                *(self._value(w, "groups", g, r) for r in RATES for w in ("before", "after")),
            ]
            for g in range(self.num_groups)
        ]

    def parity_columns(self) -> list[str]:
        return ["group", *(f"{SHORT[m]} {w}" for m in PAIR_METRICS for w in ("before", "after"))]

    def parity_rows(self) -> list[list[Any]]:
        return [
            [
                self.group_label(g),
                *(self._value(w, "parity", f"{m}/{self.keys[g]}") for m in PAIR_METRICS for w in ("before", "after")),
            ]
            for g in range(self.num_groups)
            if g != self.reference
        ]

    def summary_rows(self) -> list[list[Any]]:
        names = ["balanced_accuracy", *WORST_GROUP_METRICS]
        if self.num_groups == 2:  # AIF360's figures under their own names (the other group against the reference)
            names += [m for m in METRIC_NAMES if m in PAIR_METRICS]
        rows = [[m, *(self._value(w, "parity", m) for w in ("before", "after"))] for m in names]
        rows.append(["decision threshold", *(self._value(w, "threshold") for w in ("before", "after"))])
        return rows

    def cell_columns(self) -> list[str]:
        cells = [f"{key},y={label}" for key in self.keys for label in (0, 1)]
        return ["set", "rows", *cells, self.parity_name()]

    def parity_name(self) -> str:
        return "label SPD" if self.num_groups == 2 else "max abs label SPD"

    def label_parity(self, counts: list[int]) -> float:
        if self.num_groups == 2:
            return label_spd(counts, self.reference)
        return max_abs_label_spd(counts, self.reference)

    def cell_rows(self) -> list[list[Any]]:
        rows = [
            ["original training split", sum(self.original), *self.original, self.label_parity(self.original)],
            ["expected if group and label independent", sum(self.original), *self.expected, 0.0],
        ]
        rows += [[f"accepted, epoch {e}", sum(c), *c, self.label_parity(c)] for e, c in self.epochs]
        return rows

    # -- files -------------------------------------------------------------------------------------
    def markdown(self) -> str:
        def fmt(v: Any) -> str:
            if isinstance(v, float):
                return "n/a" if math.isnan(v) else f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
            return str(v)

        def table(columns: list[str], rows: list[list[Any]]) -> list[str]:
            return [
                "| " + " | ".join(columns) + " |",
                "|" + "---|" * len(columns),
                *("| " + " | ".join(fmt(v) for v in row) + " |" for row in rows),
            ]

        source = "fairlearn MetricFrame" if self.use_fairlearn and MetricFrame is not None else "rsft group_rates"
        spd_rule = (
            f"P(y=1 | {self.names[1 - self.reference]}) − P(y=1 | {self.names[self.reference]})"
            if self.num_groups == 2
            else "max over groups of |P(y=1 | group) − P(y=1 | reference)|"
        )
        lines = [
            f"# Fairness report: {self.dataset}, groups by `{self.sensitive}` ({self.num_groups} groups)",
            "",
            f"Reference group (every group's DI, SPD, AOD and EOD are against it): {self.group_label(self.reference)}"
            f"; chosen as {self.why}.",
            "",
            f"## Decisions per group ({self.split} split; per-group rates from {source})",
            "",
            "Selection rate = P(ŷ=1 | group); TPR = P(ŷ=1 | y=1, group); FPR = P(ŷ=1 | y=0, group). "
            "Before = the model before fine-tuning, after = at the end of the run.",
            "",
            *table(self.group_columns(), self.group_rows()),
            "",
            "## Parity against the reference group (AIF360's definitions: group − reference; DI = group / reference)",
            "",
            *table(self.parity_columns(), self.parity_rows()),
            "",
            "## Summary",
            "",
            "worst_group_disparate_impact = min over groups of min(DI, 1/DI) (1 = parity); max_abs_* = the largest "
            "|difference| over groups (groups whose figure is undefined are left out).",
            "",
            *table(["metric", "before", "after"], self.summary_rows()),
            "",
            "## Accepted training set per epoch, per (group, label) cell",
            "",
            f"Rows per cell; {self.parity_name()} = {spd_rule} of the set (0 when group and label are independent, "
            "the target of reweighing).",
            "",
            *table(self.cell_columns(), self.cell_rows()),
            "",
        ]
        return "\n".join(lines)

    def figure(self, path: Path) -> Path:
        k = self.num_groups
        labels = [f"{key} (ref)" if g == self.reference else key for g, key in enumerate(self.keys)]
        height = max(3.0, 0.45 * k + 1.2)
        fig, axes = plt.subplots(2, 3, figsize=(15, height + 3.6), gridspec_kw={"height_ratios": [height, 3.6]})
        # top row: one panel per rate, groups on the (shared) vertical axis, before and after as paired bars
        positions = np.arange(k)
        for ax, rate in zip(axes[0], RATES):
            for offset, when in ((-0.2, "before"), (0.2, "after")):
                if when in self.snapshots:
                    values = [self.snapshots[when]["groups"][g][rate] for g in range(k)]
                    ax.barh(positions + offset, values, height=0.4, label=when)
            ax.set_yticks(positions, labels if rate == RATES[0] else [""] * k)
            ax.invert_yaxis()
            ax.set_xlim(0, 1)
            ax.set_title(f"{rate} per group ({self.split})")
        if self.snapshots:
            axes[0][0].legend(fontsize=8)
        # bottom row: the accepted set per epoch against the original training split
        epochs = [e for e, _ in self.epochs]
        colours = plt.get_cmap("tab10" if k <= 10 else "tab20")
        original_rates = label_rates(self.original)
        overall = sum(self.original[1::2]) / sum(self.original)
        n_orig = sum(self.original)
        ax_rate, ax_share, ax_parity = axes[1]
        for g in range(k):
            colour = colours(g % colours.N)
            if epochs:
                ax_rate.plot(epochs, [label_rates(c)[g] for _, c in self.epochs], "o-", color=colour, label=labels[g])
                shares = [(c[2 * g] + c[2 * g + 1]) / max(sum(c), 1) for _, c in self.epochs]
                ax_share.plot(epochs, shares, "o-", color=colour)
            ax_rate.axhline(original_rates[g], color=colour, ls="--", lw=1)
            ax_share.axhline((self.original[2 * g] + self.original[2 * g + 1]) / n_orig, color=colour, ls="--", lw=1)
        ax_rate.axhline(overall, color="black", ls=":", lw=1.2)
        ax_rate.set_title("accepted P(y=1 | group) (dashed: original; dotted: independent)", fontsize=9)
        ax_rate.set_xlabel("epoch")
        ax_rate.legend(fontsize=7, ncol=2 if k > 5 else 1)
        ax_share.set_title("accepted share of each group (dashed: original)", fontsize=9)
        ax_share.set_xlabel("epoch")
        if epochs:
            ax_parity.plot(epochs, [self.label_parity(c) for _, c in self.epochs], "o-", label="accepted set")
        ax_parity.axhline(self.label_parity(self.original), color="gray", ls="--", label="original")
        ax_parity.axhline(0.0, color="black", lw=0.8)
        ax_parity.set_xlabel("epoch")
        ax_parity.set_title(f"{self.parity_name()} of the accepted set", fontsize=9)
        ax_parity.legend(handles=ax_parity.get_lines()[: 2 if epochs else 1], fontsize=8)
        fig.suptitle(f"{self.dataset}, groups by {self.sensitive}")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90)
        plt.close(fig)
        return path

    def write(self, directory: Path) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        md = directory / "fairness_report.md"
        md.write_text(self.markdown())
        return md, self.figure(directory / "fairness_report.png")
