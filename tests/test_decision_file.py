"""``task.data.dataset=file``: a user's own table (CSV, CSV.gz, JSON Lines, Parquet) through ``train(cfg)``.

The tables are made here, with column names of their own (not the README example's ``repaid`` / ``region``),
three groups (``district``), a text label and a text feature. What must hold: the four formats give the same
run to the last digit; every choice inferred from the file is in ``data_choices.json``; the file is never
written; rows with a missing value are dropped and counted (or refused); intersectional groups work.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from rsft.run.config import compose
from rsft.tasks.decision_data import load_decision_split
from rsft.tasks.table_file import load_file_table
from rsft.train import train

FAST = [
    "logger=none",
    "plot=false",
    "trainer.max_epochs=2",
    "model.pretrain.steps=60",
    "sampler.num_accepted=1000",
    "sampler.chunk_size=4096",
]
COLUMNS = ("applicant", "district", "gender", "income_k", "tenure_years", "purpose", "decision")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def applications(n: int = 900, seed: int = 0) -> list[dict]:
    """Synthetic loan applications: three districts with different approval rates, two genders, a numeric
    income and tenure, a text purpose; the decision ("approve" / "deny") depends on all of them."""
    g = np.random.default_rng(seed)
    districts = g.choice(["harbour", "hills", "old town"], size=n, p=[0.5, 0.3, 0.2])
    genders = g.choice(["f", "m"], size=n)
    income = np.round(g.gamma(4.0, 12.0, size=n), 1)
    tenure = g.integers(0, 30, size=n)
    purpose = g.choice(["car", "home", "study"], size=n)
    shift = {"harbour": 0.6, "hills": 0.0, "old town": -0.8}
    logit = 0.04 * (income - 48) + 0.05 * (tenure - 15) + np.array([shift[d] for d in districts])
    logit += 0.3 * (genders == "m") + 0.4 * (purpose == "home")
    approve = g.random(n) < 1 / (1 + np.exp(-logit))
    return [
        {
            "applicant": f"A{i:05d}",
            "district": str(districts[i]),
            "gender": str(genders[i]),
            "income_k": float(income[i]),
            "tenure_years": int(tenure[i]),
            "purpose": str(purpose[i]),
            "decision": "approve" if approve[i] else "deny",
        }
        for i in range(n)
    ]


def write_csv(path, rows, opener=open) -> None:
    with opener(path, "wt", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_parquet(path, rows) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)


WRITERS = {
    "applications.csv": write_csv,
    "applications.csv.gz": lambda p, rows: write_csv(p, rows, opener=gzip.open),
    "applications.jsonl": write_jsonl,
    "applications.parquet": write_parquet,
}
FILE_KEYS = [
    "task.data.label=decision",
    "task.data.favorable=approve",
    "task.data.sensitive=district",
    "task.data.drop=[applicant]",
]


def run(tmp_path, data, *overrides):
    out = tmp_path / "run"
    cfg = compose(["experiment=decisions_file", *FAST, f"task.data.path={data}", *overrides, f"paths.output_dir={out}"])
    train(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    choices = json.loads((out / "data_choices.json").read_text())
    return metrics, choices, out


def test_a_csv_of_applications_runs_from_config_and_records_every_choice(tmp_path):
    rows = applications()
    rows[3]["income_k"] = ""  # a missing income: the row is dropped and counted
    rows[7]["purpose"] = "NA"
    data = tmp_path / "applications.csv"
    write_csv(data, rows)
    before = (data.read_bytes(), os.stat(data).st_mtime_ns)
    metrics, choices, out = run(tmp_path, data, *FILE_KEYS)
    assert (data.read_bytes(), os.stat(data).st_mtime_ns) == before  # only read
    # the groups: three districts, every one with its parity figures against the reference
    names = [g["name"] for g in choices["groups"]]
    assert names == ["district=harbour", "district=hills", "district=old town"]
    assert [g["metric_key"] for g in choices["groups"]] == ["harbour", "hills", "old_town"]
    rates = {g["name"]: g["favorable_rate_train"] for g in choices["groups"]}
    assert choices["reference"]["name"] == max(rates, key=rates.get) == "district=harbour"
    assert "highest favourable-label rate" in choices["reference"]["why"]
    assert sum(g["rows"] for g in choices["groups"]) == choices["rows_used"] == 898
    assert choices["rows_dropped"] == {
        "policy": "task.data.missing=drop",
        "rows": 2,
        "by_column": {"income_k": 1, "purpose": 1},
    }
    assert choices["label"]["favorable"] == "approve" and set(choices["label"]["values"]) == {"approve", "deny"}
    kinds = {f["column"]: f["type"] for f in choices["features"]}
    assert kinds == {
        "district": "categorical",  # a sensitive attribute: always one-hot
        "gender": "categorical",
        "income_k": "numeric",
        "tenure_years": "numeric",
        "purpose": "categorical",
    }
    assert set(choices["standardised"]) == {"income_k", "tenure_years"}
    assert choices["feature_columns_after_coding"] == 3 + 2 + 1 + 1 + 3
    for split in ("val", "test"):
        for key in ("hills", "old_town"):
            for name in ("disparate_impact", "statistical_parity_difference", "average_odds_difference"):
                assert f"{split}/{name}/{key}" in metrics
        for key in ("harbour", "hills", "old_town"):
            assert 0 <= metrics[f"{split}/selection_rate/{key}"] <= 1
        assert 0 <= metrics[f"{split}/worst_group_disparate_impact"] <= 1
        assert f"{split}/disparate_impact" not in metrics  # three groups: no single "the other group"
    report = (out / "fairness_report.md").read_text()
    assert "district=old town (s=2)" in report and "district=harbour (s=0, reference)" in report


def test_every_format_gives_the_same_run(tmp_path):
    rows = applications(600, seed=1)
    results = {}
    for name, write in WRITERS.items():
        data = tmp_path / name
        write(data, rows)
        metrics, choices, _ = run(tmp_path / name.replace(".", "_"), data, *FILE_KEYS)
        timing = ("wall_seconds", "sampling/seconds", "sampling/accepted_per_s", "sampling/proposals_per_s")
        results[name] = ({k: v for k, v in metrics.items() if k not in timing}, choices["groups"], choices["features"])
    first = results["applications.csv"]
    for name, result in results.items():
        assert result == first, name


def test_intersectional_groups_from_two_columns_and_a_chosen_reference(tmp_path):
    data = tmp_path / "applications.jsonl"
    write_jsonl(data, applications(900, seed=2))
    split = load_decision_split(
        "file",
        ["district", "gender"],
        seed=0,
        path=data,
        stratify=True,
        reference=["hills", "m"],
        label="decision",
        favorable="approve",
        drop=["applicant"],
    )
    assert len(split.groups) == 6
    assert split.groups[split.reference] == "district=hills & gender=m"
    assert split.group_keys[0] == "harbour&f"
    assert sorted(torch.unique(split.train["s"]).tolist()) == list(range(6))


def test_inferred_types_explicit_choices_and_missing_error(tmp_path):
    data = tmp_path / "applications.csv"
    rows = applications(200, seed=3)
    rows[10]["tenure_years"] = "?"
    write_csv(data, rows)
    table = load_file_table(
        data,
        label="decision",
        favorable="approve",
        sensitive="gender",
        features=["tenure_years", "purpose", "gender"],
        categorical=["tenure_years"],
    )
    assert table.choices["rows_dropped"]["by_column"] == {"tenure_years": 1}
    assert [f["type"] for f in table.choices["features"]] == ["categorical", "categorical", "categorical"]
    assert table.choices["features"][0]["reason"] == "task.data.categorical"
    # numbers sort as numbers among the categories, and the one-hot columns stay 0/1 (not standardised)
    assert table.choices["features"][0]["categories"][:3] == ["0", "1", "2"]
    assert table.standardise is not None and not any(table.standardise)
    with pytest.raises(
        ValueError, match=r"task.data.missing=error: 1 row\(s\) .* \('tenure_years': 1; the first at line 12\)"
    ):
        load_file_table(data, label="decision", favorable="approve", sensitive="gender", missing="error")
    with pytest.raises(
        ValueError, match=r"the column 'applicant' has 199 distinct values.*task.data.drop=\[applicant\]"
    ):
        load_file_table(data, label="decision", favorable="approve", sensitive="gender")


def test_a_zero_one_label_needs_no_favorable_value(tmp_path):
    data = tmp_path / "applications.csv"
    rows = applications(300, seed=4)
    for r in rows:
        r["decision"] = 1 if r["decision"] == "approve" else 0
    write_csv(data, rows)
    table = load_file_table(data, label="decision", favorable=None, sensitive="district", drop=["applicant"])
    assert table.label.tolist() == [r["decision"] for r in rows]
    flipped = load_file_table(data, label="decision", favorable=0, sensitive="district", drop=["applicant"])
    assert (flipped.label == 1 - table.label).all()


def test_the_readme_command_of_a_lender_runs_as_printed(tmp_path, monkeypatch):
    """README "Your own table": the command, as printed, on a loans.csv with the columns it names."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### Your own table", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    words = shlex.split(block.replace("\\\n", " "))
    assert words[:2] == ["rsft-train", "experiment=decisions_file"]
    rows = applications(600, seed=5)
    table = [
        {
            "region": {"harbour": "north", "hills": "south", "old town": "coast"}[r["district"]],
            "income": r["income_k"],
            "term": r["tenure_years"],
            "repaid": "yes" if r["decision"] == "approve" else "no",
        }
        for r in rows
    ]
    monkeypatch.chdir(tmp_path)
    with open("loans.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    train(compose([*words[1:], *FAST, f"paths.output_dir={tmp_path / 'run'}"]))
    choices = json.loads((tmp_path / "run" / "data_choices.json").read_text())
    assert [g["name"] for g in choices["groups"]] == ["region=coast", "region=north", "region=south"]
    assert choices["label"]["column"] == "repaid" and choices["label"]["favorable"] == "yes"
