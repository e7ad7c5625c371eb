"""task=decisions end to end through train(cfg): pre-train, fine-tune on accepted sets, before/after metrics."""

from __future__ import annotations

import json

import pytest

from rsft.metrics.fairness import METRIC_NAMES
from rsft.run.config import compose
from rsft.train import build_components, train

FAST = ["logger=none", "plot=false", "trainer.max_epochs=3", "model.pretrain.steps=60"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def run(tmp_path, *overrides):
    cfg = compose(["experiment=credit_german", *FAST, f"paths.output_dir={tmp_path}", *overrides])
    train(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    epochs = [json.loads(line) for line in (tmp_path / "epochs.jsonl").read_text().splitlines()]
    return metrics, epochs


def test_credit_german_reports_before_and_after_on_valid_and_test(tmp_path):
    metrics, epochs = run(tmp_path)
    for split in ("val", "test"):
        for name in (*METRIC_NAMES, "threshold"):
            assert f"before/{split}/{name}" in metrics
            assert f"{split}/{name}" in metrics
    assert metrics["val/threshold"] == metrics["test/threshold"]  # chosen on validation, applied to both
    # Each epoch logs the parity difference of its own accepted set (700 rows; the data's is −0.15).
    # Its sampling sd is ≈ 0.044 per epoch, so the mean of 3 epochs is within 0.1 of 0 except with
    # probability ≈ 1e-4 (3.9 sd).
    spds = [row["train/accepted_spd"] for row in epochs]
    assert len(spds) == 3
    assert abs(sum(spds) / 3) < 0.1
    assert metrics["sampling/rule_expected_acceptance_rate"] == pytest.approx(
        metrics["sampling/acceptance_rate"], abs=0.1
    )


def test_mlp_with_on_policy_preferential_sampling(tmp_path):
    metrics, epochs = run(tmp_path, "model=mlp_tabular", "acceptance=preferential_sampling", "model.net.hidden=[16]")
    assert "test/balanced_accuracy" in metrics
    assert metrics["sampling/rule_rows_dropped"] > 0 and metrics["sampling/rule_rows_duplicated"] > 0
    # every row has copy count 0, 1 or 2 (no cell of german/age needs more than doubling): rate ≈ 1/2
    assert metrics["sampling/acceptance_rate"] == pytest.approx(0.5, abs=0.1)


@pytest.mark.parametrize("experiment", ["credit_german", "credit_adult", "credit_compas", "medical_heart"])
def test_decision_experiments_compose(experiment):
    cfg = compose([f"experiment={experiment}"])
    assert cfg.task.data.dataset == experiment.split("_")[1]
    assert cfg.model.net.input_dim == "@task.input_dim"  # the model's input size comes from the data


@pytest.mark.parametrize("experiment", ["credit_german", "medical_heart"])
def test_the_model_input_size_comes_from_the_data(experiment):
    parts = build_components(compose([f"experiment={experiment}"]))
    assert parts.model.net[0].in_features == parts.task.data.input_dim == parts.task.data.train["x"].shape[1]


def test_bad_dataset_name_fails_with_the_key_to_fix(tmp_path):
    cfg = compose(["experiment=credit_german", *FAST, f"paths.output_dir={tmp_path}", "task.data.dataset=credit_card"])
    with pytest.raises(ValueError, match="task.data.dataset='credit_card' is not a decision dataset"):
        train(cfg)


def test_task_credit_is_an_alias_of_task_decisions():
    old = compose(["experiment=credit_german", "task=credit"])
    assert old.task == compose(["experiment=credit_german"]).task


def test_medical_heart_prints_fairness_before_and_after(tmp_path, capsys):
    cfg = compose(["experiment=medical_heart", *FAST, f"paths.output_dir={tmp_path}"])
    train(cfg)
    out = capsys.readouterr().out
    assert "test/disparate_impact" in out and " -> " in out  # "before -> after", as the credit experiments print
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["before/test/balanced_accuracy"] > 0.6  # far above chance on any split (0.75-0.9 seen)
    assert cfg.task.data.dataset == "heart" and cfg.task.data.stratify
