"""A run's data flows one way: the task is built once and handed down; nothing reaches back into the data module.

- ``train()`` builds the task once (``rsft.run.build``) and hands it to the proposal, the acceptance rule, the
  model and the callbacks through config slots (``"@task"``, ``"@task.data"``): one load of a decision split
  per run, and the proposal's task *is* the data module's (and the LM model's). Mutations that fail these
  tests: ``data: ${task.data}`` back in conf/acceptance/reweighing.yaml (a second load), ``task: ${task}`` back
  in conf/proposal/policy.yaml (another task object).
- Rounds reach the callbacks and the model that report on them through ``on_round`` (the data module tells its
  observers); no module under src/ reads the data module through the trainer.
- Bad slots and bad values end in one line naming the key, before anything is written.
"""

from __future__ import annotations

import ast
import json

import pytest

import rsft.tasks.decision_data as decision_data
import rsft.train as train_module
from rsft.run.build import build
from rsft.run.config import REPO_ROOT, compose
from rsft.run.schema import ConfigError
from rsft.train import build_components, train

FAST = ["debug=fast", "plot=false", "logger=none"]


def _spy_on_data_modules(monkeypatch) -> list:
    made = []
    real = train_module.RejectionSamplingDataModule

    def spy(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(train_module, "RejectionSamplingDataModule", spy)
    return made


def test_a_decision_run_loads_its_split_once_and_every_component_shares_it(tmp_path, monkeypatch):
    loads = []
    real = decision_data.load_decision_split

    def counting(*args, **kwargs):
        loads.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(decision_data, "load_decision_split", counting)
    made = _spy_on_data_modules(monkeypatch)
    # credit_german's proposal, acceptance (reweighing) and fairness report all take the task's data
    cfg = compose(["experiment=credit_german", *FAST, "trainer.max_epochs=1", f"paths.output_dir={tmp_path}"])
    train(cfg)
    assert len(loads) == 1, loads
    (datamodule,) = made
    split = datamodule.task.data
    assert datamodule.proposal.rows["x"] is split.train["x"]  # the proposal draws the task's own rows


def test_an_lm_run_hands_the_one_task_to_the_proposal_and_the_model(tmp_path, monkeypatch):
    made = _spy_on_data_modules(monkeypatch)
    overrides = ["experiment=rft_arithmetic", *FAST, "trainer.max_epochs=1", "eval_before=false"]
    overrides += ["model.pretrain.steps=2", "task.num_sft=16", "task.num_answer_only=16", "task.num_eval=8"]
    overrides += ["task.num_train_eval=8", "model.net.eval_k=0", "proposal.max_new_tokens=8"]
    train(compose([*overrides, f"paths.output_dir={tmp_path}"]))
    (datamodule,) = made
    assert datamodule.proposal.task is datamodule.task
    assert datamodule.trainer.lightning_module.task is datamodule.task


def test_tempered_rule_takes_the_proposals_own_defensive_distribution():
    parts = build_components(compose(["experiment=onpolicy_twisted"]))
    assert parts.acceptance.reference is parts.proposal.defensive
    assert parts.acceptance.target is parts.task.target


def test_no_module_reads_the_data_module_through_the_trainer():
    """Rounds are handed to observers (on_round); reaching back (trainer.datamodule.task / last_stats) is gone."""
    offenders = []
    for path in sorted((REPO_ROOT / "src" / "rsft").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            named = isinstance(node, ast.Attribute) and node.attr == "datamodule"
            as_string = isinstance(node, ast.Constant) and node.value == "datamodule"
            if named or as_string:
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    assert offenders == []


def test_the_epoch_rows_hold_every_figure_of_the_round_and_metrics_come_from_the_last(tmp_path):
    run_dir = tmp_path / "run"
    train(compose([*FAST, f"paths.output_dir={run_dir}"]))
    rows = [json.loads(line) for line in (run_dir / "epochs.jsonl").read_text().splitlines()]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "sampling/chunks" in rows[-1] and "sampling/max_log_ratio" in rows[-1]  # not only the logged ones
    for key, value in rows[-1].items():
        if key != "epoch":
            assert metrics[key] == value, key


@pytest.mark.parametrize(
    ("node", "where", "provided", "message"),
    [
        ({"_target_": "rsft.proposals.dataset.DatasetProposal", "data": "@task.data"}, "proposal", {}, "not built"),
        (
            {"_target_": "rsft.proposals.dataset.DatasetProposal", "data": "@task.data"},
            "proposal",
            {"task": object()},
            r"proposal.data='@task.data': the task \(object\) has no 'data'",
        ),
        ({"_target_": "rsft.no.such.Thing"}, "acceptance", {}, "acceptance._target_='rsft.no.such.Thing' cannot be"),
        ({"_target_": "rsft.acceptance.lm.BestOfN", "bogus": 1}, "acceptance", {}, "acceptance.bogus is not a param"),
        ({"_target_": "rsft.acceptance.lm.Boltzmann", "beta": "hot"}, "acceptance", {}, "acceptance.beta='hot' is not"),
        ({"_target_": "rsft.acceptance.lm.Boltzmann"}, "acceptance", {}, "acceptance.beta must be set"),
        ({"_target_": "rsft.acceptance.lm.MaxPerPrompt", "max_per_prompt": True}, "a", {}, "a.max_per_prompt=True"),
        ({"_target_": "rsft.acceptance.lm.Boltzmann", "beta": 1, "_args_": [1]}, "a", {}, "does not support _args_"),
        ({"_target_": "rsft.acceptance.lm.Boltzmann", "_partial_": "yes"}, "a", {}, "a._partial_='yes' must be"),
    ],
)
def test_bad_slots_and_values_name_the_key(node, where, provided, message):
    with pytest.raises(ConfigError, match=message):
        build(node, where, provided)


def test_errors_raised_by_a_component_name_its_key():
    # The predicate's own message does not say where it sits in the config: the builder adds it.
    interval = {"_target_": "rsft.acceptance.density.Interval", "low": 1.0, "high": 0.0}
    node = {"_target_": "rsft.acceptance.density.Region", "predicate": interval}
    with pytest.raises(ValueError, match=r"^acceptance.predicate \(rsft.acceptance.density.Interval\): interval needs"):
        build(node, "acceptance")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    train(compose([*FAST, f"paths.output_dir={run_dir}"]))
    return run_dir


@pytest.mark.parametrize(
    "overrides",
    [
        ["model.net.lr=abc"],
        ["acceptance.margin=0.5"],
        ["proposal.scale=abc"],
        ["trainer.devices=abc"],
        ["trainer.accelerator=quantum"],
        ["+model.net.bogus=1"],
        [],
    ],
    ids=["lr", "margin", "scale", "devices", "accelerator", "unknown-key", "plain-rerun"],
)
def test_a_bad_value_leaves_a_finished_run_untouched(finished_run, overrides):
    """Pointed at a finished run's dir, a bad value is refused before anything is written (its metrics.json and
    config.yaml stay as they were); without a bad value, a plain run there is refused too."""
    before = {name: (finished_run / name).read_bytes() for name in ("metrics.json", "config.yaml", "run.json")}
    with pytest.raises((ConfigError, ValueError, FileExistsError)):
        train(compose([*FAST, *overrides, f"paths.output_dir={finished_run}"]))
    assert {name: (finished_run / name).read_bytes() for name in before} == before


def test_partial_gives_the_callable_with_its_arguments_bound():
    make = build({"_target_": "rsft.acceptance.lm.Boltzmann", "_partial_": True}, "acceptance.factory")
    assert make(beta=0.5).beta == 0.5
    with pytest.raises(ConfigError, match="acceptance.factory.beta='x' is not a number"):
        build({"_target_": "rsft.acceptance.lm.Boltzmann", "_partial_": True, "beta": "x"}, "acceptance.factory")
