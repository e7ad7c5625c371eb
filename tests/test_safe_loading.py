"""Checkpoints are read as weights only: a file that carries a pickled callable is refused, and its code never runs.

``torch.load(..., weights_only=False)`` unpickles anything, so a crafted checkpoint could run arbitrary code
when passed as ``model.init_checkpoint`` or ``resume``. The payload here is harmless: unpickling it would
create a marker file, which each test checks is never created. Every loading path has its crafted file:
init (a plain model), resume (a path and ``resume=auto``), LoRA init (``model=hf_causal_lm``) and fairlearn
resume (``model=fairlearn``: a pickled estimator inside a byte tensor, which passes a weights-only load).
The source scan at the end keeps unpickling calls from coming back anywhere in src/, benchmarks/, experiments/.
"""

from __future__ import annotations

import ast
import json
import pickle
import re
from pathlib import Path

import pytest
import torch
from test_fairness_methods import tiny_split
from test_resume import TIMING

from rsft.models.fairlearn_baseline import FairlearnBaseline
from rsft.run.config import compose
from rsft.train import train

REPO = Path(__file__).resolve().parents[1]

FAST = ["debug=fast", "eval_before=false", "logger=csv", "trainer.max_epochs=1", "model.pretrain.steps=0"]


class CreatesMarker:
    """Unpickling this calls ``open(marker, "w")``: the stand-in for code run by a malicious checkpoint."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def finished_run(run_dir: Path) -> Path:
    train(compose([*FAST, f"paths.output_dir={run_dir}"]))
    return run_dir / "checkpoints" / "last.ckpt"


def with_payload(ckpt: Path, out: Path, marker: Path) -> Path:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    state["payload"] = CreatesMarker(marker)
    torch.save(state, out)
    return out


def test_rsft_checkpoints_load_as_weights_only(tmp_path):
    state = torch.load(finished_run(tmp_path / "run"), map_location="cpu", weights_only=True)
    assert "state_dict" in state and "RejectionSamplingDataModule" in state


def test_init_checkpoint_with_a_pickled_callable_is_refused(tmp_path):
    marker = tmp_path / "marker"
    evil = with_payload(finished_run(tmp_path / "first"), tmp_path / "evil.ckpt", marker)
    cfg = compose([*FAST, f"model.init_checkpoint={evil}", f"paths.output_dir={tmp_path / 'run'}"])
    with pytest.raises(ValueError, match=re.escape(f"model.init_checkpoint={str(evil)!r} holds more than weights")):
        train(cfg)
    assert not marker.exists(), "the checkpoint's pickled code ran"


def test_init_checkpoint_of_weights_still_loads(tmp_path):
    first = finished_run(tmp_path / "first")
    train(compose([*FAST, f"model.init_checkpoint={first}", f"paths.output_dir={tmp_path / 'run'}"]))
    assert (tmp_path / "run" / "metrics.json").is_file()


@pytest.mark.parametrize("how", ["path", "auto"])
def test_resume_from_a_checkpoint_with_a_pickled_callable_is_refused(how, tmp_path):
    marker = tmp_path / "marker"
    run_dir = tmp_path / "run"
    last = finished_run(run_dir)
    if how == "path":
        evil = with_payload(last, tmp_path / "evil.ckpt", marker)
        resume = str(evil)
    else:  # the run dir's own last.ckpt was replaced
        evil = with_payload(last, last, marker)
        resume = "auto"
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    cfg = compose([*FAST, f"resume={resume}", "trainer.max_epochs=2", f"paths.output_dir={run_dir}"])
    with pytest.raises(ValueError, match=re.escape(f"resume={resume!r}: the checkpoint {str(evil)!r} holds more")):
        train(cfg)
    assert not marker.exists(), "the checkpoint's pickled code ran"
    # Refused before any work: the run dir is as it was (config.yaml and metrics.json included).
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


# -- LoRA init (model=hf_causal_lm with model.net.lora) ------------------------------------------------------------
def test_lora_init_checkpoint_with_a_pickled_callable_is_refused(tmp_path):
    """Mutation: hf_causal_lm.load_initial_weights back on torch.load(weights_only=False) runs the payload."""
    pytest.importorskip("peft")
    marker = tmp_path / "marker"
    evil = tmp_path / "adapters.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": CreatesMarker(marker)}, evil)
    overrides = ["experiment=rft_arithmetic", "model=hf_causal_lm", "model.net.lora={r:2}", "debug=fast"]
    cfg = compose([*overrides, "logger=csv", f"model.init_checkpoint={evil}", f"paths.output_dir={tmp_path / 'run'}"])
    with pytest.raises(ValueError, match=re.escape(f"model.init_checkpoint={str(evil)!r} holds more than weights")):
        train(cfg)
    assert not marker.exists(), "the checkpoint's pickled code ran"


# -- fairlearn resume (model=fairlearn) ------------------------------------------------------------------------------
FAIRLEARN = [
    "experiment=medical_heart",
    "model=fairlearn",
    "model.net.method=exponentiated_gradient_eo",
    "acceptance=all",
    "logger=csv",
    "eval_before=false",
]


def fairlearn_run(run_dir: Path, *extra: str) -> dict[str, float]:
    train(compose([*FAIRLEARN, *extra, f"paths.output_dir={run_dir}"]))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if k not in TIMING}


@pytest.fixture(scope="module")
def fairlearn_checkpoint(tmp_path_factory) -> Path:
    """The last.ckpt of a fairlearn run after 1 epoch (read, never changed, by the crafted-file tests)."""
    run_dir = tmp_path_factory.mktemp("fairlearn") / "run"
    fairlearn_run(run_dir, "trainer.max_epochs=1")
    return run_dir / "checkpoints" / "last.ckpt"


def test_fairlearn_checkpoint_holds_tensors_only_and_resume_continues_exactly(tmp_path):
    """A run stopped after 1 epoch and resumed to 2 ends with the uninterrupted 2-epoch run's metrics, exactly.
    Mutation: an on_load_checkpoint that does not refit fails it (the resumed evaluation has no fit)."""
    stopped = tmp_path / "stopped"
    fairlearn_run(stopped, "trainer.max_epochs=1")
    state = torch.load(stopped / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    fit = state["fairlearn_fit"]
    assert "fairlearn_estimator" not in state and set(fit) == {"training_rows_sha256", "decision_probabilities"}
    assert fit["training_rows_sha256"].dtype == torch.uint8 and fit["decision_probabilities"].dtype == torch.float64
    resumed = fairlearn_run(stopped, "trainer.max_epochs=2", "resume=auto")
    uninterrupted = fairlearn_run(tmp_path / "full", "trainer.max_epochs=2")
    assert resumed == uninterrupted  # exact equality: the refit is the same estimator
    assert len((stopped / "epochs.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("where", ["byte_tensor", "pickle_stream"])
def test_fairlearn_resume_from_a_crafted_checkpoint_is_refused(where, fairlearn_checkpoint, tmp_path):
    """byte_tensor: the estimator slot of the old format holds a pickle whose loading creates the marker (it
    passes the weights-only check). Mutation: on_load_checkpoint back on pickle.load runs it. pickle_stream:
    the payload in the checkpoint's own pickle, refused by the weights-only load before any work."""
    marker = tmp_path / "marker"
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    last = run_dir / "checkpoints" / "last.ckpt"
    state = torch.load(fairlearn_checkpoint, map_location="cpu", weights_only=True)
    if where == "byte_tensor":
        payload = torch.frombuffer(bytearray(pickle.dumps(CreatesMarker(marker))), dtype=torch.uint8)
        torch.save({**state, "fairlearn_estimator": payload}, last)
        expected = f"resume='auto': the checkpoint {str(last)!r} holds 'fairlearn_estimator', a pickled fitted"
    else:
        state["payload"] = CreatesMarker(marker)
        torch.save(state, last)
        expected = f"resume='auto': the checkpoint {str(last)!r} holds more than weights"
    cfg = compose([*FAIRLEARN, "trainer.max_epochs=2", "resume=auto", f"paths.output_dir={run_dir}"])
    with pytest.raises(ValueError, match=re.escape(expected)):
        train(cfg)
    assert not marker.exists(), "the checkpoint's pickled code ran"
    # refused before the run dir is touched (model.check_checkpoint runs before config.yaml is written)
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoints"]


@pytest.mark.parametrize("entry", ["training_rows_sha256", "decision_probabilities", "layout", "another_C"])
def test_fairlearn_resume_refuses_a_fingerprint_its_refit_does_not_reproduce(entry):
    """The refit on load is checked against the stored fingerprint; each tampered entry is refused by name, and
    so is a real refit that differs (resumed with model.net.C=0.01 instead of 1). Mutation: skipping the
    comparison (refit and carry on) fails all four."""
    data = tiny_split(120)
    model = FairlearnBaseline(data, method="threshold_optimizer_eo", seed=1)
    model.pretrain(None, 1, 1, torch.Generator())
    checkpoint: dict = {}
    model.on_save_checkpoint(checkpoint)
    fit = checkpoint["fairlearn_fit"]
    message = f"fairlearn_fit.{entry}"
    if entry == "layout":
        checkpoint["fairlearn_fit"] = {"decision_probabilities": fit["decision_probabilities"]}
        message = "its 'fairlearn_fit' entry is not the fingerprint rsft writes"
    elif entry == "another_C":
        message = "the refit of model.net.method='threshold_optimizer_eo' does not reproduce fairlearn_fit."
    else:
        fit[entry] = fit[entry].clone()
        fit[entry][0] += 1  # one byte of the data hash, or one row's probability
    restored = FairlearnBaseline(data, method="threshold_optimizer_eo", seed=1, C=0.01 if entry == "another_C" else 1)
    with pytest.raises(ValueError, match=re.escape(message)) as refused:
        restored.on_load_checkpoint(checkpoint)
    assert str(refused.value).startswith("resume: the checkpoint")
    with pytest.raises(RuntimeError, match="fitted at pre-training time"):  # no unverified fit is kept
        restored.scores(data.train)


# -- the source scan: no loading call that can unpickle code ------------------------------------------------------
#: Calls that unpickle whatever the file or bytes hold.
UNPICKLING = {
    f"{module}.{name}"
    for module in ("pickle", "_pickle", "cPickle", "dill", "cloudpickle")
    for name in ("load", "loads", "Unpickler")
} | {"joblib.load", "pandas.read_pickle", "pd.read_pickle", "shelve.open"}
#: yaml loaders that build arbitrary Python objects; yaml.load / load_all are safe only with a SafeLoader.
UNSAFE_YAML = {"yaml.unsafe_load", "yaml.unsafe_load_all", "yaml.full_load", "yaml.full_load_all"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "yaml.SafeLoader", "yaml.CSafeLoader"}


def dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """``a.b.c`` of a Name/Attribute chain, its first name resolved through the file's imports."""
    if isinstance(node, ast.Name):
        return aliases.get(node.id, node.id)
    if isinstance(node, ast.Attribute):
        base = dotted(node.value, aliases)
        return f"{base}.{node.attr}" if base else None
    return None


def unsafe_loads(source: str) -> list[tuple[int, str]]:
    """(line, what) for every call in ``source`` that could unpickle code: see UNPICKLING and UNSAFE_YAML, a
    ``torch.load`` without ``weights_only=True``, any ``weights_only`` other than True, ``allow_pickle=True``."""
    tree = ast.parse(source)
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases.update({a.asname or a.name: a.name for a in node.names})
        elif isinstance(node, ast.ImportFrom) and node.module:
            aliases.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = dotted(node.func, aliases) or ""
        keywords = {k.arg: k.value for k in node.keywords if k.arg}
        weights_only = keywords.get("weights_only")
        if name in UNPICKLING or name in UNSAFE_YAML:
            found.append((node.lineno, name))
        elif name in ("torch.load", "torch.serialization.load") and not _is_true(weights_only):
            found.append((node.lineno, f"{name} without weights_only=True"))
        elif weights_only is not None and not _is_true(weights_only):
            found.append((node.lineno, f"{name} with weights_only={ast.unparse(weights_only)}"))
        elif name in ("yaml.load", "yaml.load_all"):
            loader = keywords.get("Loader", node.args[1] if len(node.args) > 1 else None)
            if loader is None or dotted(loader, {}) not in SAFE_YAML_LOADERS:
                found.append((node.lineno, f"{name} without a SafeLoader"))
        if "allow_pickle" in keywords and not (
            isinstance(keywords["allow_pickle"], ast.Constant) and keywords["allow_pickle"].value is False
        ):
            found.append((node.lineno, f"{name} with allow_pickle={ast.unparse(keywords['allow_pickle'])}"))
    return found


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


@pytest.mark.parametrize(
    "source",
    [
        "import pickle\npickle.load(f)",
        "import pickle as p\np.loads(b)",
        "from pickle import loads\nloads(b)",
        "import pickle\npickle.Unpickler(f).load()",
        "import torch\ntorch.load(path)",
        "import torch\ntorch.load(path, map_location='cpu')",
        "import torch\ntorch.load(path, weights_only=False)",
        "import torch as t\nt.load(path, weights_only=flag)",
        "from torch import load\nload(path)",
        "trainer.fit(model, ckpt_path=p, weights_only=False)",
        "import yaml\nyaml.load(text)",
        "import yaml\nyaml.load(text, Loader=yaml.FullLoader)",
        "import yaml\nyaml.load(text, yaml.UnsafeLoader)",
        "import yaml\nyaml.unsafe_load(text)",
        "import yaml\nyaml.full_load(text)",
        "import numpy as np\nnp.load(path, allow_pickle=True)",
        "import joblib\njoblib.load(path)",
    ],
)
def test_the_source_scan_catches_each_unsafe_load(source):
    """The scan's own mutation test: each of these is one finding."""
    assert len(unsafe_loads(source)) == 1, source


def test_the_source_scan_passes_safe_loads():
    source = (
        "import torch, yaml, numpy as np\n"
        "torch.load(path, map_location='cpu', weights_only=True)\n"
        "trainer.fit(model, ckpt_path=p, weights_only=True)\n"
        "yaml.safe_load(text)\n"
        "yaml.load(text, Loader=yaml.SafeLoader)\n"
        "yaml.load(text, yaml.CSafeLoader)\n"
        "np.load(path)\n"
        "np.load(path, allow_pickle=False)\n"
        "json.loads(text)\n"
        "import pickle\npickle.dumps(x)\n"
    )
    assert unsafe_loads(source) == []


def test_no_loading_call_in_the_code_can_unpickle_code():
    """src/, benchmarks/ and experiments/ hold no pickle.load(s), no torch.load without weights_only=True, no
    weights_only=False and no yaml loader but the safe one. Mutation: the code before issue 22 (pickle.load in
    fairlearn_baseline.py, weights_only=False in hf_causal_lm.py, a bare torch.load in benchmarks/onpolicy.py)."""
    files = sorted(p for folder in ("src", "benchmarks", "experiments") for p in (REPO / folder).rglob("*.py"))
    assert len(files) > 50  # the scan really reads the code
    found = [
        f"{path.relative_to(REPO)}:{line}: {what}"
        for path in files
        for line, what in unsafe_loads(path.read_text(encoding="utf-8"))
    ]
    assert not found, "loading calls that can run code:\n" + "\n".join(found)
