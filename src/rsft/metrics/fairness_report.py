"""``fairness_report.md`` and ``fairness_report.png``: what a reviewer of a credit or diagnosis model asks to see.

A Lightning callback (``callbacks.fairness_report``, on in the decision experiments) that records

- the decisions per group on one evaluation split (``split``, default test) before fine-tuning (the
  ``trainer.validate`` run rsft makes first) and after it (the last validation): selection rate, true-
  and false-positive rate, group size; plus the parity figures of :mod:`rsft.metrics.fairness`;
- the accepted training set of every epoch per (sensitive attribute, label) cell against the original
  training split and against the sizes under independence (the reweighing target), and its label SPD.

At the end of the fit it writes both files into the run directory (beside ``metrics.json``) and, when a
W&B logger is on, logs the PNG as an image and the two tables as W&B tables.

Definitions. The per-group rates come from ``fairlearn.metrics.MetricFrame`` (``selection_rate``,
``true_positive_rate``, ``false_positive_rate``: the same definitions as AIF360's per-group rates); when
fairlearn is not installed (it is the optional ``fairness`` extra) from :func:`rsft.metrics.fairness.group_rates`,
which gives the same numbers. The parity figures keep AIF360's definitions, which fairlearn does not
share: differences unprivileged − privileged (fairlearn: max − min ≥ 0), DI = P(ŷ=1|unpriv)/P(ŷ=1|priv)
(fairlearn's ``demographic_parity_ratio`` is min/max ≤ 1), AOD = ½[(FPR₀ − FPR₁) + (TPR₀ − TPR₁)].
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
    average_odds_difference,
    balanced_accuracy,
    disparate_impact,
    equal_opportunity_difference,
    group_rates,
    statistical_parity_difference,
)

try:  # the optional fairness extra
    from fairlearn.metrics import MetricFrame, count, false_positive_rate, selection_rate, true_positive_rate
except ImportError:  # pragma: no cover - exercised only where fairlearn is absent
    MetricFrame = None

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend is chosen first: reports are written headless

RATES = ("selection_rate", "tpr", "fpr")
CELLS = ((0, 0), (0, 1), (1, 0), (1, 1))


def per_group(decisions: torch.Tensor, y: torch.Tensor, s: torch.Tensor, use_fairlearn: bool = True) -> dict:
    """{group: {"n", "selection_rate", "tpr", "fpr"}} for s = 0 and s = 1 (MetricFrame when available)."""
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
        return {int(g): {k: float(frame.loc[g, k]) for k in ("n", *RATES)} for g in frame.index}
    rates = group_rates(decisions, y, s)
    return {
        g: {"n": float((s == g).sum()), "selection_rate": r["positive_rate"], "tpr": r["tpr"], "fpr": r["fpr"]}
        for g, r in rates.items()
    }


def parity(decisions: torch.Tensor, y: torch.Tensor, s: torch.Tensor) -> dict[str, float]:
    """AIF360's parity figures (unprivileged − privileged; DI a ratio) and the balanced accuracy."""
    return {
        "balanced_accuracy": balanced_accuracy(decisions, y),
        "statistical_parity_difference": statistical_parity_difference(decisions, s),
        "disparate_impact": disparate_impact(decisions, s),
        "average_odds_difference": average_odds_difference(decisions, y, s),
        "equal_opportunity_difference": equal_opportunity_difference(decisions, y, s),
    }


def cell_counts(s: torch.Tensor, y: torch.Tensor) -> list[int]:
    """Rows per (s, y) cell in the order of :data:`CELLS`."""
    return [int(((s == a) & (y == b)).sum()) for a, b in CELLS]


def label_spd(counts: list[int]) -> float:
    """P(y=1 | s=0) − P(y=1 | s=1) of a set with these cell counts."""
    n0, n1 = counts[0] + counts[1], counts[2] + counts[3]
    if n0 == 0 or n1 == 0:
        return math.nan
    return counts[1] / n0 - counts[3] / n1


class FairnessReport(pl.Callback):
    """Collects the figures during the run and writes ``fairness_report.md`` + ``.png`` at the end of the fit."""

    def __init__(self, data: Any, split: str = "test", use_fairlearn: bool = True):
        rows = training_rows(data)
        for name in ("s", "y"):
            field(rows, name, "callbacks.fairness_report (on the task's training split)", "use task=decisions")
        self.dataset = str(getattr(data, "dataset", "data"))
        self.sensitive = str(getattr(data, "sensitive", "s"))
        self.split = split
        self.use_fairlearn = bool(use_fairlearn)
        self.original = cell_counts(rows["s"].long(), rows["y"].long())
        n = sum(self.original)
        by_s = (self.original[0] + self.original[1], self.original[2] + self.original[3])
        by_y = (self.original[0] + self.original[2], self.original[1] + self.original[3])
        self.expected = [by_s[a] * by_y[b] / n for a, b in CELLS]  # cell sizes with s and y independent
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
            "groups": per_group(decisions, y, s, self.use_fairlearn),
            "parity": parity(decisions, y, s),
        }

    def on_round(self, epoch: int, stats: dict[str, float], accepted: Batch) -> None:
        if accepted and "s" in accepted and "y" in accepted:
            # a round Lightning asks for again (a restarted epoch) replaces the epoch's earlier row
            self.epochs = [(e, c) for e, c in self.epochs if e != epoch]
            self.epochs.append((int(epoch), cell_counts(accepted["s"].long(), accepted["y"].long())))

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
    def group_columns(self) -> list[str]:
        return ["group", "n", *(f"{r} {w}" for r in RATES for w in ("before", "after"))]

    def group_rows(self) -> list[list[Any]]:
        rows = []
        for g, name in ((0, "s=0 (unprivileged)"), (1, "s=1 (privileged)")):
            first = next(iter(self.snapshots.values()), None)
            n = int(first["groups"][g]["n"]) if first else 0
            cells = [
                self.snapshots[w]["groups"][g][r] if w in self.snapshots else math.nan
                for r in RATES
                for w in ("before", "after")
            ]
            rows.append([name, n, *cells])
        return rows

    def cell_columns(self) -> list[str]:
        return ["set", "rows", *(f"s={a},y={b}" for a, b in CELLS), "label SPD"]

    def cell_rows(self) -> list[list[Any]]:
        rows = [
            ["original training split", sum(self.original), *self.original, label_spd(self.original)],
            ["expected if s, y independent", sum(self.original), *self.expected, 0.0],
        ]
        rows += [[f"accepted, epoch {e}", sum(c), *c, label_spd(c)] for e, c in self.epochs]
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
        lines = [
            f"# Fairness report: {self.dataset}, sensitive attribute `{self.sensitive}` (1 = privileged)",
            "",
            f"## Decisions per group ({self.split} split; per-group rates from {source})",
            "",
            "Selection rate = P(ŷ=1 | group); TPR = P(ŷ=1 | y=1, group); FPR = P(ŷ=1 | y=0, group). "
            "Before = the model before fine-tuning, after = at the end of the run.",
            "",
            *table(self.group_columns(), self.group_rows()),
            "",
            "## Parity (AIF360's definitions: unprivileged − privileged; DI = unprivileged / privileged)",
            "",
        ]
        names = ("balanced_accuracy", "statistical_parity_difference", "disparate_impact")
        names += ("average_odds_difference", "equal_opportunity_difference")
        rows = [
            [m, *(self.snapshots[w]["parity"][m] if w in self.snapshots else math.nan for w in ("before", "after"))]
            for m in names
        ]
        rows.append(
            [
                "decision threshold",
                *(self.snapshots[w]["threshold"] if w in self.snapshots else math.nan for w in ("before", "after")),
            ]
        )
        lines += table(["metric", "before", "after"], rows)
        lines += [
            "",
            "## Accepted training set per epoch, per (sensitive attribute, label) cell",
            "",
            "Rows per cell; label SPD = P(y=1 | s=0) − P(y=1 | s=1) of the set (0 when s and y are independent, "
            "the target of reweighing).",
            "",
            *table(self.cell_columns(), self.cell_rows()),
            "",
        ]
        return "\n".join(lines)

    def figure(self, path: Path) -> Path:
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        ax = axes[0]
        labels = [f"{r}\ns={g}" for r in RATES for g in (0, 1)]
        x = np.arange(len(labels))
        for offset, when in ((-0.2, "before"), (0.2, "after")):
            if when in self.snapshots:
                values = [self.snapshots[when]["groups"][g][r] for r in RATES for g in (0, 1)]
                ax.bar(x + offset, values, width=0.4, label=when)
        ax.set_xticks(x, labels)
        ax.set_ylim(0, 1)
        ax.set_title(f"decisions per group ({self.split})")
        if self.snapshots:
            ax.legend()
        ax = axes[1]
        epochs = [e for e, _ in self.epochs]
        n_orig = sum(self.original)
        for i, (a, b) in enumerate(CELLS):
            color = f"C{i}"
            if epochs:
                ax.plot(
                    epochs, [c[i] / max(sum(c), 1) for _, c in self.epochs], "o-", color=color, label=f"s={a}, y={b}"
                )
            ax.axhline(self.original[i] / n_orig, color=color, ls="--", lw=1)
            ax.axhline(self.expected[i] / n_orig, color=color, ls=":", lw=1)
        ax.set_xlabel("epoch")
        ax.set_ylabel("share of the accepted set")
        ax.set_title("accepted cells (dashed: original, dotted: independent)")
        ax.legend(fontsize=8)
        ax = axes[2]
        if epochs:
            ax.plot(epochs, [label_spd(c) for _, c in self.epochs], "o-", label="accepted set")
        ax.axhline(label_spd(self.original), color="gray", ls="--", label="original")
        ax.axhline(0.0, color="black", lw=0.8)
        ax.set_xlabel("epoch")
        ax.set_title("label SPD of the accepted set")
        ax.legend(handles=ax.get_lines()[: 2 if epochs else 1])
        fig.suptitle(f"{self.dataset}, sensitive attribute {self.sensitive}")
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
