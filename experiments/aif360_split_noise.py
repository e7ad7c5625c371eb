"""How much of the AIF360 reweighing table is split noise? (used by experiments/README.md)

Fits the demo's classifier exactly — L2 logistic regression with sklearn's default C = 1, by full-batch
L-BFGS, unweighted ("before") and with the reweighing weights W(s, y) ("after", the demo's weighted
fit, not rejection) — on many random 70/15/15 splits, picks the threshold on validation as the demo
does, and prints the mean, sd and 5–95 % range of the test metrics over splits. "after@bef-thr"
scores the reweighed model at the threshold chosen for the original one, as the demo's summary does.

    OMP_NUM_THREADS=1 python experiments/aif360_split_noise.py german age 200
    OMP_NUM_THREADS=1 python experiments/aif360_split_noise.py german age 200 --publish

``--publish`` also writes experiments/results/split_noise_<dataset>_<sensitive>/ (report.md, figures.json
with ``<model> :: <metric> :: mean|sd|q05|q95``, provenance.json) for the docs to embed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from rsft.acceptance.fairness import reweighing_weights
from rsft.metrics.fairness import best_threshold, classification_report
from rsft.tasks.decision_data import load_decision_split
from rsft.tools.provenance import git_state, provenance, write_artifact
from rsft.tools.sources import import_closure, relative

METRICS = ("balanced_accuracy", "disparate_impact", "average_odds_difference")


def fit_logistic(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, c: float = 1.0):
    """argmin ½‖w‖² + C Σ weights_i · logloss_i (sklearn's objective); returns a scoring function."""
    x, y = x.double(), y.double()
    w = torch.zeros(x.shape[1], dtype=torch.double, requires_grad=True)
    b = torch.zeros(1, dtype=torch.double, requires_grad=True)
    optimiser = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe", tolerance_grad=1e-10)

    def closure():
        optimiser.zero_grad()
        loss = (
            c * (weights * torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y, reduction="none")).sum()
        )
        loss = loss + 0.5 * (w**2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return lambda features: torch.sigmoid(features.double() @ w + b).detach().float()


def main(dataset: str, sensitive: str, splits: int) -> tuple[list[str], dict[str, float]]:
    """Print the spread of the test metrics over ``splits`` random splits; return the lines and the figures."""
    results = {"before": [], "after": [], "after@bef-thr": []}
    for seed in range(splits):
        split = load_decision_split(dataset, sensitive, seed=seed)
        train = split.train
        weights = {
            "before": torch.ones(len(train["y"]), dtype=torch.double),
            "after": reweighing_weights(train["s"], train["y"])[train["s"], train["y"]],
        }
        thresholds = {}
        for name, w in weights.items():
            score = fit_logistic(train["x"], train["y"], w)
            thresholds[name] = best_threshold(score(split.valid["x"]), split.valid["y"])
            results[name].append(
                classification_report(score(split.test["x"]), split.test["y"], split.test["s"], thresholds[name])
            )
        results["after@bef-thr"].append(
            classification_report(score(split.test["x"]), split.test["y"], split.test["s"], thresholds["before"])
        )
    lines = [f"{dataset} / {sensitive}: {splits} random splits, test metrics of the exact (weighted) logistic fit"]
    figures: dict[str, float] = {}
    for name, reports in results.items():
        for metric in METRICS:
            values = torch.tensor([r[metric] for r in reports], dtype=torch.double)
            values = values[torch.isfinite(values)]
            q = torch.quantile(values, torch.tensor([0.05, 0.95], dtype=torch.double))
            lines.append(
                f"  {name:13s} {metric:24s} mean {values.mean():+.4f}  sd {values.std():.4f}  "
                f"5-95% [{q[0]:+.4f}, {q[1]:+.4f}]"
            )
            for key, value in (("mean", values.mean()), ("sd", values.std()), ("q05", q[0]), ("q95", q[1])):
                figures[f"{name} :: {metric} :: {key}"] = float(value)
    print("\n".join(lines))
    return lines, figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("sensitive")
    parser.add_argument("splits", type=int, nargs="?", default=100)
    parser.add_argument("--publish", action="store_true")
    args = parser.parse_args()
    code_at_start = git_state()
    started = time.perf_counter()
    printed, numbers = main(args.dataset, args.sensitive, args.splits)
    if args.publish:
        name = f"split_noise_{args.dataset}_{args.sensitive}"
        record = provenance(
            ["python", "experiments/aif360_split_noise.py", *sys.argv[1:]],
            time.perf_counter() - started,
            relative(import_closure([Path(__file__)])),
            seeds=list(range(args.splits)),
            started=code_at_start,
        )
        report = f"# Split noise: {args.dataset} / {args.sensitive}\n\n```text\n" + "\n".join(printed) + "\n```\n"
        write_artifact(Path(__file__).parent / "results" / name, {"report.md": report}, numbers, record)
