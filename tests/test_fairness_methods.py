"""The baselines of experiments/fairness_methods.yaml: the exact weighted fit and the fairlearn methods."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression as SkLogisticRegression

from rsft.acceptance.fairness import reweighing_table
from rsft.models.fairlearn_baseline import FairlearnBaseline
from rsft.models.tabular import LogisticRegression
from rsft.run.config import compose
from rsft.tasks.decision_data import load_decision_split
from rsft.train import train

# a tiny table with cells (s, y): (0,0) ×2, (0,1) ×1, (1,0) ×3, (1,1) ×2
S = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1])
Y = torch.tensor([0, 0, 1, 0, 0, 0, 1, 1])


def test_reweighing_table_by_hand():
    # n = 8; P(s=0) = 3/8, P(y=0) = 5/8: W(s, y) = P(s) P(y) / P(s, y)
    w = reweighing_table({"s": S, "y": Y, "x": torch.zeros(8, 1)})
    hand = [
        [(3 / 8) * (5 / 8) / (2 / 8), (3 / 8) * (3 / 8) / (1 / 8)],
        [(5 / 8) * (5 / 8) / (3 / 8), (5 / 8) * (3 / 8) / (2 / 8)],
    ]
    assert w[0] == pytest.approx(hand[0]) and w[1] == pytest.approx(hand[1])


def test_cell_weights_weight_each_rows_loss_by_its_cell():
    model = LogisticRegression(2, cell_weights=[[1.0, 2.0], [3.0, 4.0]])
    x = torch.tensor([[0.5, -1.0], [1.0, 2.0], [-0.3, 0.1]])
    batch = {"x": x, "y": torch.tensor([1, 0, 1]), "s": torch.tensor([0, 1, 1])}
    logits = model(x).detach()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["y"].float(), reduction="none")
    expected = (torch.tensor([2.0, 3.0, 4.0]) * bce).mean()  # cells (0,1), (1,0), (1,1)
    assert float(model.training_loss(batch)) == pytest.approx(float(expected), rel=1e-6)
    with pytest.raises(ValueError, match="model.net.cell_weights must be a 2×2 table"):
        LogisticRegression(2, cell_weights=[1.0, 2.0])


def tiny_split(n: int = 400, seed: int = 0):
    """Two groups; the label depends on x, and s shifts x (so an unconstrained fit has a selection gap)."""
    g = np.random.default_rng(seed)
    s = (g.random(n) < 0.5).astype(np.int64)
    x = g.normal(size=(n, 2)) + np.stack([1.0 * s, np.zeros(n)], 1)
    y = (x[:, 0] + 0.5 * x[:, 1] + 0.3 * g.normal(size=n) > 0.5).astype(np.int64)
    feats = np.concatenate([x, s[:, None]], 1)
    rows = {"x": torch.tensor(feats, dtype=torch.float32), "y": torch.tensor(y), "s": torch.tensor(s)}
    return SimpleNamespace(train=rows)


def selection_gap(model: FairlearnBaseline, rows: dict) -> float:
    d = model.scores(rows)
    return float(d[rows["s"] == 0].mean() - d[rows["s"] == 1].mean())


@pytest.mark.parametrize("method", ["exponentiated_gradient_dp", "threshold_optimizer_dp"])
def test_fairlearn_dp_methods_close_the_selection_gap_on_a_tiny_split(method):
    data = tiny_split()
    rows = data.train
    # the unconstrained base learner's gap, which the methods must close
    d = SkLogisticRegression().fit(rows["x"].numpy(), rows["y"].numpy()).predict(rows["x"].numpy())
    plain_gap = float(d[rows["s"].numpy() == 0].mean() - d[rows["s"].numpy() == 1].mean())
    assert plain_gap < -0.25
    model = FairlearnBaseline(data, method=method, seed=3)
    model.pretrain(None, 1, 1, torch.Generator())
    scores = model.scores(rows)
    assert set(torch.unique(scores).tolist()) <= {0.0, 1.0}  # decisions, not probabilities
    assert abs(selection_gap(model, rows)) < 0.1  # demographic parity on the data it was fitted on
    assert torch.equal(model.scores(rows), scores)  # randomized decisions drawn with a fixed random_state


def test_fairlearn_model_needs_fitting_and_a_known_method():
    data = tiny_split(60)
    with pytest.raises(ValueError, match="model.net.method='grid_search' is not a fairlearn baseline"):
        FairlearnBaseline(data, method="grid_search")
    model = FairlearnBaseline(data, method="threshold_optimizer_eo")
    with pytest.raises(RuntimeError, match="fitted at pre-training time"):
        model.scores(data.train)


def test_fairlearn_row_through_train_scores_its_decisions_with_the_shared_metrics(tmp_path):
    cfg = compose(
        [
            "experiment=medical_heart",
            "logger=none",
            "acceptance=all",
            "model=fairlearn",
            "model.net.method=threshold_optimizer_dp",
            "trainer.max_epochs=1",
            f"paths.output_dir={tmp_path}",
        ]
    )
    train(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    # nothing is fine-tuned: after = before, and the validation split chooses no threshold (0/1 scores)
    assert metrics["test/balanced_accuracy"] == metrics["before/test/balanced_accuracy"]
    assert metrics["test/threshold"] == pytest.approx(0.01)
    # recompute the test metrics by hand from the model's decisions on the same split
    split = load_decision_split("heart", "sex", seed=0, stratify=True)
    model = FairlearnBaseline(split, method="threshold_optimizer_dp", seed=0, l2=cfg.model.net.l2)
    model.pretrain(None, 1, 1, torch.Generator())
    d = model.scores(split.test).long()
    y, s = split.test["y"], split.test["s"]

    def rate(mask: torch.Tensor) -> float:  # P(decision = 1 | mask)
        return float(d[mask].double().mean())

    assert metrics["test/statistical_parity_difference"] == pytest.approx(rate(s == 0) - rate(s == 1), abs=1e-6)
    balanced = 0.5 * (rate(y == 1) + 1 - rate(y == 0))
    assert metrics["test/balanced_accuracy"] == pytest.approx(balanced, abs=1e-6)
    eod = rate((y == 1) & (s == 0)) - rate((y == 1) & (s == 1))
    assert metrics["test/equal_opportunity_difference"] == pytest.approx(eod, abs=1e-6)


def test_fairlearn_fit_survives_a_checkpoint_round_trip():
    data = tiny_split(120)
    model = FairlearnBaseline(data, method="exponentiated_gradient_eo", seed=1)
    model.pretrain(None, 1, 1, torch.Generator())
    checkpoint: dict = {}
    model.on_save_checkpoint(checkpoint)
    restored = FairlearnBaseline(data, method="exponentiated_gradient_eo", seed=1)
    restored.on_load_checkpoint(checkpoint)
    assert torch.equal(restored.scores(data.train), model.scores(data.train))
