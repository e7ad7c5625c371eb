"""rsft-compare on hand-made run dirs (the files a run writes), so the numbers are known exactly."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
import yaml

from rsft.tools.compare import compare, main

BASE = {"name": "density_grid25", "seed": 0, "proposal": {"scale": 3.0}, "paths": {"output_dir": "x"}, "resume": None}


def make_run(
    path: Path,
    overrides: dict,
    nll: list[float] | None,
    rate: list[float],
    job: int | None = None,
    record: bool = True,
    config: dict | None = None,
) -> Path:
    path.mkdir(parents=True)
    cfg = json.loads(json.dumps(config or BASE))
    cfg["paths"]["output_dir"] = str(path)
    for key, value in overrides.items():
        node = cfg
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    if record:
        (path / "run.json").write_text(
            json.dumps(
                {
                    "overrides": ["experiment=density_grid25", *(f"{k}={v}" for k, v in overrides.items())],
                    "sweep_dir": str(path.parent),
                    "job_num": job,
                    "mode": "multirun",
                }
            )
        )
    rows = [
        {"epoch": e, "sampling/acceptance_rate": r, **({"val/nll": nll[e]} if nll else {})} for e, r in enumerate(rate)
    ]
    (path / "epochs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    if nll is not None:
        (path / "metrics.json").write_text(
            json.dumps(
                {
                    "val/nll": nll[-1],
                    "sampling/acceptance_rate": rate[-1],
                    "epochs": float(len(rate)),
                    "wall_seconds": 1.5,
                    "before/val/nll": 9.0,
                }
            )
        )
    return path


@pytest.fixture
def sweep(tmp_path) -> Path:
    root = tmp_path / "multiruns" / "2026-01-01_00-00-00"
    job = 0
    for scale in (2, 3):
        for seed in (0, 1):
            nll = [5.0 + scale, 4.0 + scale + 0.1 * seed]
            make_run(
                root / f"proposal.scale={scale},seed={seed}",
                {"proposal.scale": scale, "seed": seed},
                nll,
                [0.1 / scale, 0.2 / scale],
                job=job,
            )
            job += 1
    # a job that never finished: no metrics.json
    make_run(root / "proposal.scale=4,seed=0", {"proposal.scale": 4, "seed": 0}, None, [0.05], job=job)
    return root


def test_table_keyed_by_differing_overrides(sweep, tmp_path):
    out = tmp_path / "out"
    result = compare([sweep], metric="val/nll", out=out)
    assert result["settings"] == ["proposal.scale", "seed"]  # experiment=... is the same everywhere
    assert result["metrics"] == ["val/nll", "sampling/acceptance_rate", "epochs", "wall_seconds"]
    header, rows = result["header"], result["rows"]
    assert header[:4] == ["job", "proposal.scale", "seed", "status"]
    # sorted by val/nll ascending, the unfinished run last with empty cells
    assert [r[1:3] for r in rows] == [["2", "0"], ["2", "1"], ["3", "0"], ["3", "1"], ["4", "0"]]
    assert rows[0][4] == "6" and rows[1][4] == "6.1"
    assert rows[-1][3] == "unfinished" and rows[-1][4:] == ["", "", "", ""]

    with (out / "compare.csv").open() as handle:
        table = list(csv.reader(handle))
    assert table[0] == [*header, "run_dir"]
    assert table[1][-1] == str((sweep / "proposal.scale=2,seed=0").resolve())
    md = (out / "compare.md").read_text()
    assert md.startswith("| job | proposal.scale | seed | status | val/nll |")
    # the seed table: mean ± std over the two seeds of scale=3
    expected = f"{statistics.fmean([7.0, 7.1]):.4g} ± {statistics.stdev([7.0, 7.1]):.2g}"
    assert result["by_seed"][1][1] == ["3", "2/2", expected, "0.06667 ± 0", "2 ± 0", "1.5 ± 0"]
    assert result["by_seed"][1][2][:2] == ["4", "0/1"]
    assert expected in md
    for name in ("sampling_acceptance_rate.png", "val_nll.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sort_descending_and_default_out(sweep):
    result = compare([sweep], metric="val/nll", sort="sampling/acceptance_rate", descending=True)
    assert [r[1] for r in result["rows"]] == ["2", "2", "3", "3", "4"]
    assert (sweep / "compare" / "compare.md").is_file()


def test_runs_without_records_fall_back_to_config_differences(tmp_path):
    a = make_run(tmp_path / "a", {"proposal.scale": 2}, [6.0], [0.1], record=False)
    b = make_run(tmp_path / "b", {"proposal.scale": 3}, [5.0], [0.2], record=False)
    result = compare([a, b], out=tmp_path / "out")
    assert result["settings"] == ["proposal.scale"]  # paths.output_dir differs too but is not a setting
    assert [r[1] for r in result["rows"]] == ["3", "2"]


def test_cli_errors_name_the_problem(sweep, tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        main([str(sweep), "--metric", "val/accuracy", "--out", str(tmp_path / "o")])
    assert err.value.code == 2
    assert "--metric 'val/accuracy'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path / "nowhere")])
    main([str(sweep), "--out", str(tmp_path / "o2"), "--columns", "before/val/nll"])
    assert "before/val/nll" in (tmp_path / "o2" / "compare.md").read_text()
