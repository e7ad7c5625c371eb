"""rsft-table: spec checks, aggregation (mean ± std, missing cells, verdicts), collect mode, resuming."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import yaml

from rsft.run.config import REPO_ROOT
from rsft.tools import table as table_mod
from rsft.tools.table import (
    Cell,
    TableSpecError,
    collect,
    failure_reason,
    load_spec,
    main,
    multirun_command,
    parse_spec,
    run_dir,
)
from rsft.tools.table import runs as table_runs

SPEC = {
    "title": "toy table",
    "source": "Somebody et al. 2020, Table 1",
    "seeds": 3,
    "overrides": ["logger=none"],
    "metrics": [{"key": "test/acc", "label": "Acc", "digits": 3}, "test/di"],
    "tolerance": {"rule": "spread", "k": 2.0},
    "rows": [
        {"label": "base line", "overrides": ["acceptance=all"], "reference": {"test/acc": 0.70, "test/di": 0.5}},
        {"label": "fair", "overrides": ["acceptance=reweighing"], "reference": {"test/acc": 0.60}},
    ],
}


def write_spec(tmp_path, spec=SPEC, name="toy"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def fake_run(out, spec, row_index, seed, **metrics):
    directory = run_dir(out, spec.rows[row_index], seed)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "metrics.json").write_text(json.dumps(metrics))
    return directory


def test_spec_checks_name_the_problem():
    with pytest.raises(TableSpecError, match="metrics must be a non-empty list"):
        parse_spec({**SPEC, "metrics": []}, "toy")
    with pytest.raises(TableSpecError, match="reference names metric.*test/f1"):
        parse_spec({**SPEC, "rows": [{"label": "a", "reference": {"test/f1": 1.0}}]}, "toy")
    with pytest.raises(TableSpecError, match="tolerance.rule must be one of"):
        parse_spec({**SPEC, "tolerance": {"rule": "vibes"}}, "toy")
    with pytest.raises(TableSpecError, match="row labels must differ"):
        parse_spec({**SPEC, "rows": [{"label": "a b"}, {"label": "a_b"}]}, "toy")
    with pytest.raises(TableSpecError, match="unknown key"):
        parse_spec({**SPEC, "colums": []}, "toy")
    spec = parse_spec(SPEC, "toy")
    assert spec.seeds == [0, 1, 2] and spec.metrics[1].label == "test/di"


def test_aggregation_missing_cells_and_verdicts(tmp_path):
    spec = parse_spec(SPEC, "toy")
    out = tmp_path / "toy"
    # row 0: acc 0.70, 0.72, 0.74 → mean 0.72, sd 0.02 → |0.72 − 0.70| = 0.02 ≤ 2·0.02: inside
    #        di 0.9, 1.0, 1.1 → mean 1.0, sd 0.1 → |1.0 − 0.5| = 0.5 > 0.2: outside
    for seed, (acc, di) in enumerate([(0.70, 0.9), (0.72, 1.0), (0.74, 1.1)]):
        fake_run(out, spec, 0, seed, **{"test/acc": acc, "test/di": di})
    # row 1: one seed only, and no test/di at all; a non-finite value is left out
    fake_run(out, spec, 1, 0, **{"test/acc": 0.61})
    fake_run(out, spec, 1, 1, **{"test/acc": math.inf})
    cells = collect(spec, out)
    acc, di = cells[0]
    assert acc.n == 3 and acc.mean == pytest.approx(0.72) and acc.std == pytest.approx(0.02)
    assert acc.verdict == "inside" and di.verdict == "outside"
    acc1, di1 = cells[1]
    assert acc1.values == [0.61] and math.isnan(acc1.std)
    # a single run has no spread: with k·std undefined the bound is the absolute floor (0) → outside
    assert acc1.verdict == "outside"
    assert di1.verdict == "missing" and di1.reference is None


def test_collect_mode_writes_markdown_and_csv_with_missing_cells(tmp_path, capsys):
    path = write_spec(tmp_path)
    spec = load_spec(str(path))
    root = tmp_path / "tables"
    fake_run(root / "toy", spec, 0, 0, **{"test/acc": 0.7, "test/di": 0.5})
    assert main([str(path), "--collect", "--output-root", str(root)]) == 0
    md = (root / "toy" / "table.md").read_text()
    assert "| fair | missing [0.600] | missing |" in md
    assert "0.700 (n=1) [0.700] ✓" in md  # one run exactly at the reference: |0| ≤ 0
    rows = (root / "toy" / "table.csv").read_text().splitlines()
    assert rows[0] == "row,metric,n,mean,std,reference,bound,verdict"
    assert "fair,test/di,0,,,,,missing" in rows
    printed = capsys.readouterr().out
    assert "missing" in printed and "toy table" in printed


def test_runs_only_missing_cells_and_seeds_flag(tmp_path, monkeypatch):
    path = write_spec(tmp_path)
    root = tmp_path / "tables"
    spec = load_spec(str(path))
    fake_run(root / "toy", spec, 0, 1, **{"test/acc": 0.7, "test/di": 0.5})
    calls = []

    def fake_subprocess_run(command, **kwargs):
        calls.append(command)
        seeds = next(a for a in command if a.startswith("seed=")).split("=")[1].split(",")
        sweep_dir = next(a for a in command if a.startswith("hydra.sweep.dir=")).split("=", 1)[1]
        for seed in seeds:  # what a multirun would leave behind
            (tmp_path / sweep_dir / f"seed={seed}").mkdir(parents=True, exist_ok=True)
            (tmp_path / sweep_dir / f"seed={seed}" / "metrics.json").write_text(json.dumps({"test/acc": 0.6}))
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(table_runs.subprocess, "run", fake_subprocess_run)
    assert main([str(path), "--output-root", str(root), "--seeds", "2", "hydra/launcher=basic"]) == 0
    # row 0 had seed 1 already: only seed 0 runs; row 1 runs seeds 0 and 1 (--seeds 2)
    assert [next(a for a in c if a.startswith("seed=")) for c in calls] == ["seed=0", "seed=0,1"]
    assert calls[0][-1] == "hydra/launcher=basic" and "acceptance=all" in calls[0] and "logger=none" in calls[0]
    calls.clear()
    assert main([str(path), "--output-root", str(root), "--seeds", "2"]) == 0
    assert calls == []  # nothing missing any more


def test_multirun_command_has_deterministic_job_dirs(tmp_path):
    spec = parse_spec(SPEC, "toy")
    command = multirun_command(spec, tmp_path, spec.rows[0], [0, 2], [])
    assert command[:4] == [sys.executable, "-m", "rsft.train", "-m"]
    assert f"hydra.sweep.dir={tmp_path / 'runs' / 'base_line'}" in command
    assert "hydra.sweep.subdir='seed=${seed}'" in command and "seed=0,2" in command


def test_failure_reason_prefers_rsft_trains_own_line():
    stderr = (
        "some warning\nrsft-train: error: DatasetUnavailableError: COMPAS is not shipped\n"
        "(set HYDRA_FULL_ERROR=1 for the full trace)\n"
    )
    assert failure_reason(stderr, 1) == "rsft-train: error: DatasetUnavailableError: COMPAS is not shipped"
    assert failure_reason("", 3) == "exit code 3"


def test_unknown_table_name_is_one_clear_line(capsys):
    assert main(["no_such_table"]) == 2
    assert "no table spec" in capsys.readouterr().err


TABLE_SPECS = sorted(p for p in (REPO_ROOT / "experiments").glob("*.yaml") if p.name != "examples.yaml")


@pytest.mark.parametrize("path", TABLE_SPECS, ids=lambda p: p.stem)
def test_every_committed_spec_parses(path):
    spec = load_spec(str(path))
    assert spec.rows and spec.seeds


def test_a_row_can_have_seeds_of_its_own(tmp_path, monkeypatch):
    spec_dict = {**SPEC, "seeds": 2, "rows": [{"label": "base"}, {"label": "small data", "seeds": 4}]}
    path = write_spec(tmp_path, spec_dict)
    root = tmp_path / "tables"
    record: list = []
    monkeypatch.setattr(table_runs.subprocess, "run", _fake_multirun(tmp_path, record=record))
    assert main([str(path), "--output-root", str(root)]) == 0
    assert sorted(record) == [("base", ["0", "1"]), ("small_data", ["0", "1", "2", "3"])]
    assert [row[0].n for row in collect(load_spec(str(path)), root / "toy")] == [2, 4]
    assert "rows with seeds of their own (small data: 4)" in (root / "toy" / "table.md").read_text()
    with pytest.raises(TableSpecError, match="row 'x': seeds must be positive"):
        parse_spec({**SPEC, "rows": [{"label": "x", "seeds": 0}]}, "toy")


def test_the_aif360_spec_covers_the_published_table():
    spec = load_spec("aif360_reweighing")
    assert len(spec.rows) == 12 and len(spec.seeds) >= 5
    assert all(len(row.reference) == 3 for row in spec.rows)


@pytest.mark.slow
def test_end_to_end_one_real_row(tmp_path):
    spec = {
        "title": "german smoke",
        "seeds": 2,
        "overrides": ["logger=none", "plot=false", "trainer.max_epochs=2", "model.pretrain.steps=20"],
        "env": {"OMP_NUM_THREADS": "1"},
        "metrics": ["test/balanced_accuracy"],
        "rows": [
            {
                "label": "german",
                "overrides": ["experiment=credit_german"],
                "reference": {"test/balanced_accuracy": 0.65},
            }
        ],
    }
    path = write_spec(tmp_path, spec, "smoke")
    root = tmp_path / "tables"
    result = subprocess.run(
        [sys.executable, "-m", "rsft.tools.table", str(path), "--output-root", str(root)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert (root / "smoke" / "runs" / "german" / "seed=1" / "metrics.json").is_file()
    assert "(n=2)" in (root / "smoke" / "table.md").read_text()


@pytest.mark.slow
def test_wandb_flag_logs_the_table_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    path = write_spec(tmp_path)
    root = tmp_path / "tables"
    fake_run(root / "toy", load_spec(str(path)), 0, 0, **{"test/acc": 0.7, "test/di": 0.5})
    assert main([str(path), "--collect", "--wandb", "--output-root", str(root)]) == 0
    runs = list((root / "toy" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0


def _fake_multirun(tmp_path, fail_rows=(), record=None):
    """A stand-in for ``rsft-train -m`` that writes metrics.json (or fails for the rows named)."""
    import threading

    lock = threading.Lock()

    def run(command, **kwargs):
        seeds = next(a for a in command if a.startswith("seed=")).split("=")[1].split(",")
        sweep_dir = next(a for a in command if a.startswith("hydra.sweep.dir=")).split("=", 1)[1]
        row = sweep_dir.rsplit("/", 1)[-1]
        with lock:
            if record is not None:
                record.append((row, seeds))
        if row in fail_rows:
            return subprocess.CompletedProcess(command, 1, "", "rsft-train: error: ValueError: bad row\n")
        for seed in seeds:
            (tmp_path / sweep_dir / f"seed={seed}").mkdir(parents=True, exist_ok=True)
            (tmp_path / sweep_dir / f"seed={seed}" / "metrics.json").write_text(json.dumps({"test/acc": 0.6}))
        return subprocess.CompletedProcess(command, 0, "", "")

    return run


def test_parallel_jobs_run_one_cell_per_process_and_respect_after(tmp_path, monkeypatch):
    spec_dict = {
        **SPEC,
        "jobs": 2,
        "rows": [{"label": "base"}, {"label": "child", "after": "base"}, {"label": "other"}],
    }
    path = write_spec(tmp_path, spec_dict)
    root = tmp_path / "tables"
    record: list = []
    monkeypatch.setattr(table_runs.subprocess, "run", _fake_multirun(tmp_path, record=record))
    assert main([str(path), "--output-root", str(root)]) == 0
    assert sorted(record) == sorted([(r, [str(s)]) for r in ("base", "child", "other") for s in range(3)])
    # every child cell started after the base cell of its seed had finished
    for seed in "012":
        assert record.index(("base", [seed])) < record.index(("child", [seed]))
    assert all(row[0].n == 3 for row in collect(load_spec(str(path)), root / "toy"))


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_failed_row_skips_the_rows_after_it_with_the_reason(tmp_path, monkeypatch, capsys, jobs):
    spec_dict = {**SPEC, "rows": [{"label": "base"}, {"label": "child", "after": "base"}]}
    path = write_spec(tmp_path, spec_dict)
    root = tmp_path / "tables"
    record: list = []
    monkeypatch.setattr(table_runs.subprocess, "run", _fake_multirun(tmp_path, fail_rows=("base",), record=record))
    assert main([str(path), "--output-root", str(root), "--jobs", str(jobs)]) == 0
    assert all(row == "base" for row, _ in record)  # the child never ran
    md = (root / "toy" / "table.md").read_text()
    assert "base: rsft-train: error: ValueError: bad row" in md
    assert "child: needs row 'base'" in md


def test_after_must_name_an_earlier_row():
    with pytest.raises(TableSpecError, match="after='later' must name an earlier row"):
        parse_spec({**SPEC, "rows": [{"label": "a", "after": "later"}, {"label": "later"}]}, "toy")
    with pytest.raises(TableSpecError, match="jobs must be a positive integer"):
        parse_spec({**SPEC, "jobs": 0}, "toy")
    with pytest.raises(TableSpecError, match="unknown key.*'overides'"):
        parse_spec({**SPEC, "rows": [{"label": "a", "overides": []}]}, "toy")


def test_the_rft_spec_covers_what_the_issue_asks():
    """SFT baseline, k in {1, 4, 16, 64}, dedup on and off, an answer-only row, at least 3 seeds."""
    spec = load_spec("rft_arithmetic")
    assert len(spec.seeds) >= 3

    def setting(row, key, default):
        values = [o.split("=", 1)[1] for o in row.overrides if o.startswith(f"{key}=")]
        return values[-1] if values else default

    rft = [
        r
        for r in spec.rows
        if setting(r, "proposal.pool", "sft") == "sft" and setting(r, "acceptance", "all_of") == "all_of"
    ]
    assert {setting(r, "proposal.k", None) for r in rft} >= {"1", "4", "16", "64"}
    no_dedup = [r for r in spec.rows if setting(r, "acceptance", "all_of") == "verifier"]
    assert no_dedup and all(setting(r, "proposal.pool", "sft") == "sft" for r in no_dedup)
    assert any(setting(r, "proposal.pool", "sft") == "answer_only" for r in spec.rows)
    # every row but the first loads the first row's SFT weights, so each waits for it
    assert all(r.after == spec.rows[0].label for r in spec.rows[1:])
    assert "model.save_pretrained=true" in spec.rows[0].overrides


def test_epoch_metrics_and_paired_differences_by_seed(tmp_path):
    spec_dict = {
        **SPEC,
        "seeds": 3,
        "metrics": ["test/acc", "epoch[0]:val/acc", "epoch[-1]:val/acc"],
        "rows": [{"label": "base"}, {"label": "better"}],
        "paired": {"baseline": "base", "metrics": ["test/acc", "epoch[-1]:val/acc"]},
    }
    path = write_spec(tmp_path, spec_dict)
    spec = load_spec(str(path))
    out = tmp_path / "tables" / "toy"
    for row_index, shift in ((0, 0.0), (1, 0.1)):
        for seed in range(3):
            if row_index == 1 and seed == 2:
                continue  # a missing run: pairs only where both rows have the seed
            directory = fake_run(out, spec, row_index, seed, **{"test/acc": 0.5 + 0.01 * seed + shift})
            epochs = [{"epoch": e, "val/acc": 0.1 * e + seed + shift} for e in range(3)]
            (directory / "epochs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in epochs))
    table = collect(spec, out)
    assert table[0][1].values == [0.0, 1.0, 2.0] and table[0][2].values == [0.2, 1.2, 2.2]
    diffs = {(row, metric): values for _, row, metric, values in table_mod.paired_differences(spec, table)}
    assert diffs[("better", "test/acc")] == pytest.approx([0.1, 0.1])
    assert diffs[("better", "epoch[-1]:val/acc")] == pytest.approx([0.1, 0.1])
    figures = table_mod.table_figures(spec, table)
    assert figures["paired :: better − base :: test/acc :: mean"] == pytest.approx(0.1)
    assert figures["paired :: better − base :: test/acc :: n"] == 2
    assert figures["paired :: better − base :: test/acc :: min"] == pytest.approx(0.1)
    markdown = table_mod.table_markdown(spec, table)
    assert (
        "| better | +0.1000 ± 0.0000 (n=2; +0.1000 … +0.1000) | +0.1000 ± 0.0000 (n=2; +0.1000 … +0.1000) |" in markdown
    )
    assert "No cell has a reference value, so none is judged; 0 missing." in markdown

    # the lowest and highest differences are those of single seeds (the worst seed decides "in every seed")
    def cell(row: str, values: list[float]) -> Cell:
        return Cell(row, "test/acc", values, None, by_seed=dict(enumerate(values)))

    uneven = [[cell("base", [0.5, 0.5, 0.5]), *table[0][1:]], [cell("better", [0.7, 0.4, 0.6]), *table[1][1:]]]
    figures = table_mod.table_figures(spec, uneven)
    assert figures["paired :: better − base :: test/acc :: min"] == pytest.approx(-0.1)
    assert figures["paired :: better − base :: test/acc :: max"] == pytest.approx(0.2)
    assert figures["better :: test/acc :: min"] == pytest.approx(0.4)
    assert figures["better :: test/acc :: max"] == pytest.approx(0.7)
    assert "(n=3; -0.1000 … +0.2000)" in table_mod.table_markdown(spec, uneven)
    with pytest.raises(TableSpecError, match="paired.baseline='nope' must be a row label"):
        parse_spec({**spec_dict, "paired": {"baseline": "nope", "metrics": ["test/acc"]}}, "toy")
    # several groups, each with its own rows
    groups = [
        {"baseline": "base", "metrics": ["test/acc"], "rows": ["better"]},
        {"baseline": "better", "metrics": ["test/acc"], "rows": ["base"]},
    ]
    two = parse_spec({**spec_dict, "paired": groups}, "toy")
    found = {(g.baseline, row): d for g, row, _, d in table_mod.paired_differences(two, table)}
    assert found[("base", "better")] == pytest.approx([0.1, 0.1])
    assert found[("better", "base")] == pytest.approx([-0.1, -0.1])
    with pytest.raises(TableSpecError, match="paired.rows names"):
        parse_spec({**spec_dict, "paired": {"baseline": "base", "metrics": ["test/acc"], "rows": ["x"]}}, "toy")
