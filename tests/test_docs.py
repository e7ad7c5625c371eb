"""Figures in the docs come from committed artifacts (rsft-docs), and the check fails when they drift."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from rsft.tools import docs
from rsft.tools.docs import DocsError, differences, fill
from rsft.tools.provenance import FIGURES, PROVENANCE, read_provenance
from rsft.tools.sources import run_sources
from rsft.tools.table import load_spec, main
from rsft.tools.table import runs as table_runs


def test_the_three_readmes_match_their_artifacts():
    problems = []
    for name in docs.DOCS:
        problems += [f"{name}: {d}" for d in differences((docs.REPO_ROOT / name).read_text())]
    assert not problems, "\n".join(problems) + "\nrun `rsft-docs build` (or regenerate the artifact)"


def test_every_cited_artifact_has_provenance_with_its_command_and_commit():
    cited = set()
    for name in docs.DOCS:
        cited |= docs.artifacts_cited((docs.REPO_ROOT / name).read_text())
    for directory in cited:
        record = read_provenance(docs.REPO_ROOT / directory)
        for key in ("command", "commit", "dirty", "date", "wall_seconds", "packages", "machine", "sources"):
            assert key in record, f"{directory}/{PROVENANCE} has no {key}"
        assert record["sources"], f"{directory}: no sources recorded, staleness cannot be judged"


def make_artifact(root, figures=None, body="| a | b |\n|---|---|\n| 1 | 2 |\n"):
    directory = root / "results" / "toy"
    directory.mkdir(parents=True)
    (directory / "table.md").write_text("# Toy table\n\n" + body)
    (directory / FIGURES).write_text(json.dumps(figures or {"inside": 35, "judged": 36, "acc :: mean": 0.71284}))
    record = {"command": "rsft-table toy --publish", "commit": "0123456789abcdef", "dirty": False}
    (directory / PROVENANCE).write_text(json.dumps({**record, "date": "2026-12-01T00:00:00Z", "wall_seconds": 12.0}))
    return directory


DOC = """Intro.
<!-- include: results/toy/table.md -->
<!-- /include -->
<!-- fig: results/toy | inside | d --><!-- /fig --> of <!-- fig: results/toy | judged --><!-- /fig --> inside;
accuracy <!-- fig: results/toy | acc :: mean | .3f --><!-- /fig -->.
"""


def test_fill_embeds_the_artifact_and_its_provenance_line(tmp_path):
    make_artifact(tmp_path)
    text = fill(DOC, tmp_path)
    assert "| 1 | 2 |" in text and "# Toy table" not in text  # the doc has its own heading
    assert "Produced by `rsft-table toy --publish` at `0123456789`, 2026-12-01, 12 s." in text
    assert "-->35<!--" in text and "-->36<!--" in text and "-->0.713<!--" in text
    assert differences(text, tmp_path) == []
    assert fill(text, tmp_path) == text  # idempotent


def test_changing_an_artifact_without_rebuilding_the_docs_fails_the_check(tmp_path):
    directory = make_artifact(tmp_path)
    text = fill(DOC, tmp_path)
    figures = json.loads((directory / FIGURES).read_text())
    (directory / FIGURES).write_text(json.dumps({**figures, "inside": 34}))
    assert differences(text, tmp_path) == ["fig results/toy | inside | d: the doc says '35', the artifact '34'"]
    (directory / FIGURES).write_text(json.dumps(figures))
    (directory / "table.md").write_text("# Toy table\n\n| a | b |\n|---|---|\n| 1 | 3 |\n")
    assert differences(text, tmp_path) == ["include results/toy/table.md: the embedded copy differs from the artifact"]
    # and a number edited by hand in the doc fails the same way
    (directory / "table.md").write_text("# Toy table\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    assert len(differences(text.replace("-->0.713<!--", "-->0.800<!--"), tmp_path)) == 1


def test_a_missing_artifact_or_figure_is_a_clear_error(tmp_path):
    make_artifact(tmp_path)
    with pytest.raises(DocsError, match="results/nope/table.md does not exist"):
        fill("<!-- include: results/nope/table.md -->\n<!-- /include -->", tmp_path)
    with pytest.raises(DocsError, match="has no figure 'outside'"):
        fill("<!-- fig: results/toy | outside --><!-- /fig -->", tmp_path)


def git(root, *args):
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def test_stale_lists_artifacts_whose_sources_changed_after_their_commit(tmp_path):
    git(tmp_path, "init", "-q")
    git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "start")
    (tmp_path / "model.py").write_text("x = 1\n")
    (tmp_path / "other.py").write_text("y = 1\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "code")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    directory = tmp_path / "experiments" / "results" / "toy"
    directory.mkdir(parents=True)
    machine = {"cpu_capability": docs.cpu_capability()}  # made on this machine's kind of CPU: no note
    record = {"commit": head, "date": "2026-12-01", "sources": ["model.py"], "machine": machine}
    (directory / PROVENANCE).write_text(json.dumps(record))
    assert docs.stale_report(tmp_path) == [f"fresh experiments/results/toy ({head[:10]}, 2026-12-01)"]
    (tmp_path / "other.py").write_text("y = 2\n")  # not a source of the artifact
    git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "other")
    assert docs.stale_report(tmp_path)[0].startswith("fresh")
    (tmp_path / "model.py").write_text("x = 2\n")  # uncommitted change of a source
    assert docs.stale_report(tmp_path) == [
        f"stale experiments/results/toy ({head[:10]}, 2026-12-01): 1 source(s) changed since: model.py"
    ]


def test_run_sources_are_the_configs_and_code_a_run_loads():
    sources = {str(p.relative_to(docs.REPO_ROOT)) for p in run_sources(["experiment=credit_german"])}
    assert {"conf/train.yaml", "conf/experiment/credit_german.yaml", "conf/model/logistic.yaml"} <= sources
    assert {"src/rsft/train.py", "src/rsft/sampling.py", "src/rsft/models/tabular.py"} <= sources
    assert "src/rsft/proposals/policy.py" not in sources  # a credit run never loads the LM policy
    assert "src/rsft/models/flow.py" not in sources  # nor the flow
    assert "src/rsft/acceptance/fairness.py" in sources


SPEC = {
    "title": "Toy",
    "seeds": 2,
    "metrics": ["test/acc"],
    "rows": [{"label": "base", "overrides": ["experiment=credit_german"]}],
}


def fake_multirun(tmp_path):
    real_run = subprocess.run

    def run(command, **kwargs):
        if "rsft.train" not in command:  # git, for the provenance
            return real_run(command, **kwargs)
        seeds = next(a for a in command if a.startswith("seed=")).split("=")[1].split(",")
        sweep_dir = next(a for a in command if a.startswith("hydra.sweep.dir=")).split("=", 1)[1]
        for seed in seeds:
            (tmp_path / sweep_dir / f"seed={seed}").mkdir(parents=True, exist_ok=True)
            metrics = {"test/acc": 0.6 + 0.1 * int(seed), "wall_seconds": 3.0}
            (tmp_path / sweep_dir / f"seed={seed}" / "metrics.json").write_text(json.dumps(metrics))
        return subprocess.CompletedProcess(command, 0, "", "")

    return run


def test_table_publish_writes_table_figures_and_provenance(tmp_path, monkeypatch):
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    monkeypatch.setattr(table_runs.subprocess, "run", fake_multirun(tmp_path))
    results = tmp_path / "results"
    args = [str(path), "--output-root", str(tmp_path / "tables"), "--publish", "--results-root", str(results)]
    assert main(args) == 0
    directory = results / "toy"
    assert "| base | 0.6500 ± 0.0707 (n=2) |" in (directory / "table.md").read_text()
    figures = json.loads((directory / FIGURES).read_text())
    assert figures["base :: test/acc :: mean"] == pytest.approx(0.65) and figures["base :: test/acc :: n"] == 2
    record = read_provenance(directory)
    assert record["command"].startswith("rsft-table ") and record["seeds"] == [0, 1]
    assert record["runs_seconds"] == 6.0 and len(record["commit"] or "") in (0, 40)
    assert "experiments/README.md" not in record["sources"] and "src/rsft/models/tabular.py" in record["sources"]
    assert load_spec(str(path)).path == path


def test_publish_refuses_a_table_with_missing_required_cells(tmp_path, monkeypatch, capsys):
    path = tmp_path / "toy.yaml"
    spec = {**SPEC, "rows": [*SPEC["rows"], {"label": "never", "overrides": ["experiment=credit_german"]}]}
    path.write_text(yaml.safe_dump(spec))
    results = tmp_path / "results"
    args = [str(path), "--collect", "--output-root", str(tmp_path / "tables"), "--publish", "--results-root"]
    assert main([*args, str(results)]) == 1
    assert "rows ['base', 'never'] have runs missing" in capsys.readouterr().out
    assert not results.exists()


def test_benchmarks_publish_the_printed_report_with_figures_and_provenance(tmp_path, monkeypatch, capsys):
    import torch

    from benchmarks import __main__ as bench

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    try:
        bench.main(["--quick", "--threads", "1", "--sections", "dims", "--publish", "toy"], results_root=tmp_path)
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    report = (tmp_path / "toy" / "report.md").read_text()
    assert "throughput vs dimension" in report and report.count("\n  ") >= 3
    assert printed.split("published")[0].strip() in report  # exactly what the console showed
    figures = json.loads((tmp_path / "toy" / FIGURES).read_text())
    assert figures["dims :: 10 :: rsft_over_numpy"] > 0 and "wall_seconds" in figures
    record = read_provenance(tmp_path / "toy")
    assert record["command"] == "python -m benchmarks --quick --threads 1 --sections dims --publish toy"
    assert "benchmarks/suite.py" in record["sources"] and "src/rsft/sampling.py" in record["sources"]


def test_lm_sampling_benchmark_publishes_its_report_with_figures_and_provenance(tmp_path, capsys):
    import torch

    from benchmarks import lm_sampling

    threads = torch.get_num_threads()
    try:
        args = ["--threads", "1", "--batch-sizes", "1", "3", "--new-tokens", "4", "--repeats", "1", "--publish", "toy"]
        lm_sampling.main(args, results_root=tmp_path)
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    report = (tmp_path / "toy" / "report.md").read_text()
    assert printed.split("published")[0].strip() in report and "torch threads=1" in report
    figures = json.loads((tmp_path / "toy" / FIGURES).read_text())
    assert figures["batch 3 :: cache_tokens_per_s"] > 0 and figures["batch 1 :: ratio"] > 0
    assert "batch 4 :: ratio" not in figures
    record = read_provenance(tmp_path / "toy")
    assert record["command"].startswith("python -m benchmarks.lm_sampling --threads 1")
    assert "src/rsft/models/tiny_gpt.py" in record["sources"]


def test_the_committed_examples_spec_parses():
    examples = docs.load_examples(docs.REPO_ROOT / docs.EXAMPLES)
    assert {e.name for e in examples} >= {"default", "density_onpolicy"}
    with pytest.raises(DocsError, match="show must be summary/epochs/epoch_table"):
        docs.load_examples_data({"examples": [{"name": "x", "show": ["plots"]}]}, "toy.yaml")


def test_provenance_keeps_the_starting_commit_when_the_code_changed_during_the_run(monkeypatch):
    from rsft.tools import provenance as prov

    start = {"commit": "a" * 40, "dirty": False, "tree": "t1"}
    monkeypatch.setattr(prov, "git_state", lambda repo=None: {"commit": "b" * 40, "dirty": False, "tree": "t2"})
    record = prov.provenance("cmd", 1.0, ["x.py"], started=start)
    assert record["commit"] == "a" * 40 and record["dirty"] is True and record["code_changed_during_run"]
    unchanged = prov.provenance("cmd", 1.0, ["x.py"], started={"commit": "b" * 40, "dirty": False, "tree": "t2"})
    assert unchanged["commit"] == "b" * 40 and "code_changed_during_run" not in unchanged


def test_a_collect_only_publish_keeps_the_earlier_publish_record(tmp_path, monkeypatch):
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    monkeypatch.setattr(table_runs.subprocess, "run", fake_multirun(tmp_path))
    results = tmp_path / "results"
    common = ["--output-root", str(tmp_path / "tables"), "--publish", "--results-root", str(results)]
    assert main([str(path), *common]) == 0
    first = read_provenance(results / "toy")
    assert not first["collected_only"]
    for _ in range(2):  # re-collecting twice still points at the publish that ran the cells
        assert main([str(path), "--collect", *common]) == 0
    again = read_provenance(results / "toy")
    assert again["collected_only"] and again["earlier_publish"]["wall_seconds"] == first["wall_seconds"]
    assert again["earlier_publish"]["command"] == first["command"]
    assert "Collected from earlier runs by `rsft-table" in (results / "toy" / "table.md").read_text()


def test_check_notes_artifacts_made_on_another_cpu_capability(tmp_path):
    """Floating-point results are bitwise reproducible only on the same CPU capability (AVX2 vs AVX512 moved the
    on-policy example's rates by up to 0.12): rsft-docs check says which artifacts came from another one."""
    from rsft.tools.docs import capability_notes

    for name, capability in (("same", "AVX512"), ("other", "AVX2"), ("unrecorded", None)):
        machine = {"cpu": "x"} if capability is None else {"cpu": "x", "cpu_capability": capability}
        (tmp_path / name).mkdir()
        (tmp_path / name / "provenance.json").write_text(json.dumps({"machine": machine}))
    notes = capability_notes([tmp_path / n for n in ("same", "other", "unrecorded")], "AVX512", tmp_path)
    assert len(notes) == 2
    assert notes[0].startswith("note: other was produced on a AVX2 CPU, this machine is AVX512")
    assert "unrecorded was produced on a CPU whose capability was not recorded" in notes[1]
