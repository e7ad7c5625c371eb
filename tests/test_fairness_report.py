"""fairness_report.md / .png: per-group rates (fairlearn MetricFrame and rsft's own) and AIF360's parity
figures against hand-computed values, and the files a fairness run writes."""

from __future__ import annotations

import json
import math

import pytest
import torch
from fairlearn.metrics import demographic_parity_ratio

from rsft.metrics import fairness_report
from rsft.metrics.fairness_report import cell_counts, label_spd, parity, per_group
from rsft.run.config import compose
from rsft.train import train

# 10 rows. s=0 (unprivileged): rows 0-3; s=1: rows 4-9.
S = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
Y = torch.tensor([1, 1, 0, 0, 1, 1, 1, 0, 0, 0])
D = torch.tensor([1, 1, 1, 0, 1, 1, 0, 1, 0, 0])
# by hand: s=0: selection 3/4, TPR 2/2, FPR 1/2;  s=1: selection 3/6, TPR 2/3, FPR 1/3
HAND = {
    0: {"n": 4, "selection_rate": 3 / 4, "tpr": 1.0, "fpr": 1 / 2},
    1: {"n": 6, "selection_rate": 3 / 6, "tpr": 2 / 3, "fpr": 1 / 3},
}


@pytest.mark.parametrize("use_fairlearn", [True, False], ids=["MetricFrame", "group_rates"])
def test_per_group_rates_by_hand(use_fairlearn):
    got = per_group(D, Y, S, use_fairlearn=use_fairlearn)
    for g in (0, 1):
        assert got[g] == pytest.approx(HAND[g])


def test_parity_keeps_aif360_definitions_by_hand():
    p = parity(D, Y, S)
    assert p["statistical_parity_difference"] == pytest.approx(3 / 4 - 1 / 2)
    assert p["disparate_impact"] == pytest.approx((3 / 4) / (1 / 2))  # unprivileged / privileged: 1.5
    assert p["average_odds_difference"] == pytest.approx(0.5 * ((1 / 2 - 1 / 3) + (1 - 2 / 3)))
    assert p["equal_opportunity_difference"] == pytest.approx(1 - 2 / 3)
    # overall: 4 of 5 positives decided 1 (TPR 4/5), 3 of 5 negatives decided 0 (TNR 3/5)
    assert p["balanced_accuracy"] == pytest.approx(0.5 * (4 / 5 + 3 / 5))


def test_aif360_di_is_not_fairlearns_ratio():
    # AIF360's DI is 1.5 here (the unprivileged group is selected more); fairlearn's ratio is min/max = 2/3
    assert parity(D, Y, S)["disparate_impact"] == pytest.approx(1.5)
    assert demographic_parity_ratio(Y.numpy(), D.numpy(), sensitive_features=S.numpy()) == pytest.approx(2 / 3)


def test_cells_and_label_spd_by_hand():
    counts = cell_counts(S, Y)
    assert counts == [2, 2, 3, 3]
    assert label_spd(counts) == pytest.approx(2 / 4 - 3 / 6)
    assert math.isnan(label_spd([0, 0, 3, 3]))


def test_a_fairness_run_writes_the_report(tmp_path):
    cfg = compose(
        [
            "experiment=medical_heart",
            "logger=none",
            "trainer.max_epochs=3",
            "model.pretrain.steps=60",
            f"paths.output_dir={tmp_path}",
        ]
    )
    train(cfg)
    text = (tmp_path / "fairness_report.md").read_text()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    lines = text.splitlines()
    assert lines[0] == "# Fairness report: heart, groups by `sex` (2 groups)"
    assert "Reference group (every group's DI, SPD, AOD and EOD are against it): sex=Male (s=1, reference)" in text

    def rows(prefix: str) -> list[list[str]]:
        return [[c.strip() for c in ln.strip("|").split("|")][1:] for ln in lines if ln.startswith(f"| {prefix} |")]

    def row(prefix: str) -> list[str]:
        (found,) = rows(prefix)
        return found

    # before / after parity in the report = the run's metrics (same split, same threshold)
    for name in ("statistical_parity_difference", "disparate_impact", "equal_opportunity_difference"):
        before, after = (float(v) for v in row(name))
        assert before == pytest.approx(metrics[f"before/test/{name}"], rel=1e-3, abs=1e-4)
        assert after == pytest.approx(metrics[f"test/{name}"], rel=1e-3, abs=1e-4)
    after = float(row("worst_group_disparate_impact")[1])
    assert after == pytest.approx(metrics["test/worst_group_disparate_impact"], rel=1e-3, abs=1e-4)
    # women: a row of rates (n first), then a row of parity figures against men (SPD, DI, ... before/after)
    female_rates, female_parity = rows("sex=Female (s=0)")
    assert float(female_parity[2]) == pytest.approx(metrics["before/test/disparate_impact"], rel=1e-3, abs=1e-4)
    assert float(female_parity[1]) == pytest.approx(metrics["test/statistical_parity_difference"], rel=1e-3, abs=1e-4)
    # group sizes add up to the test split; the accepted set has one row per epoch; the original cells
    # are the training split's
    n0 = int(female_rates[0])
    n1 = int(row("sex=Male (s=1, reference)")[0])
    assert n0 + n1 == 48
    assert len([ln for ln in lines if ln.startswith("| accepted, epoch")]) == 3
    original = [int(v) for v in row("original training split")[:5]]
    assert original == [210, 57, 11, 96, 46]
    png = (tmp_path / "fairness_report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    choices = json.loads((tmp_path / "data_choices.json").read_text())
    assert [g["name"] for g in choices["groups"]] == ["sex=Female", "sex=Male"]
    assert choices["reference"]["name"] == "sex=Male"


def test_report_logs_image_and_tables_to_a_wandb_like_logger(tmp_path):
    class FakeWandb:
        def __init__(self):
            self.calls = []

        def log_image(self, key, images):
            self.calls.append(("image", key, images))

        def log_table(self, key, columns, data):
            self.calls.append(("table", key, columns, data))

    report = fairness_report.FairnessReport({"s": S, "y": Y, "x": torch.zeros(10, 1)})
    report.epochs = [(0, [3, 2, 3, 2])]
    logger = FakeWandb()
    trainer = type("T", (), {"is_global_zero": True, "default_root_dir": str(tmp_path), "loggers": [logger]})()
    report.on_fit_end(trainer, None)
    kinds = [(c[0], c[1]) for c in logger.calls]
    assert kinds == [
        ("image", "fairness_report/figure"),
        ("table", "fairness_report/groups"),
        ("table", "fairness_report/accepted_cells"),
    ]
    cells = logger.calls[2][3]
    assert cells[0][1:6] == [10, 2, 2, 3, 3] and cells[-1][0] == "accepted, epoch 0"
    assert (tmp_path / "fairness_report.md").is_file()
