"""logger=wandb: offline by itself, files in the run dir, whole config, history, summary, image, group, tags."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from rsft.run.config import compose
from rsft.run.wandb import RUN_ID_FILE, decide_mode, override_tags, run_group
from rsft.train import train

pytest.importorskip("wandb")

BLOCK = 32 * 1024  # the .wandb file is a LevelDB-style log: 32 KiB blocks of framed records
FRAME = 7  # crc32 (4) + length (2) + kind (1)


def wandb_records(path: Path) -> list:
    """Every record of an offline ``.wandb`` file, parsed with W&B's own protobuf ``Record``."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    records, pending, pos = [], b"", 7
    while pos + FRAME <= len(data):
        left = BLOCK - pos % BLOCK
        if left < FRAME:  # block trailer padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + FRAME])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunk = data[pos + FRAME : pos + FRAME + length]
        pos += FRAME + length
        if kind == 1:  # a whole record
            pieces = chunk
        elif kind == 2:  # first piece
            pending = chunk
            continue
        elif kind == 3:  # middle piece
            pending += chunk
            continue
        else:  # last piece
            pieces, pending = pending + chunk, b""
        record = wandb_internal_pb2.Record()
        record.ParseFromString(pieces)
        records.append(record)
    return records


def read_offline_run(run_dir: Path) -> dict:
    """run id, group, tags, config, history rows and final summary of the run's offline W&B files."""
    files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert files, f"no offline W&B run under {run_dir / 'wandb'}"
    out: dict = {"runs": [], "config": {}, "history": [], "summary": {}}

    def items(entries) -> dict:  # "a/b" keys may come as nested_key ["a", "b"]
        return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in entries}

    for file in files:
        for record in wandb_records(file):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                out["runs"].append(
                    {"id": record.run.run_id, "group": record.run.run_group, "tags": list(record.run.tags)}
                )
            elif kind == "config":
                out["config"].update(items(record.config.update))
            elif kind == "history":
                out["history"].append(items(record.history.item))
            elif kind == "summary":
                out["summary"].update(items(record.summary.update))
    return out


@pytest.fixture
def no_wandb_account(monkeypatch, tmp_path):
    """No API key, no netrc entry, no WANDB_MODE: the state of a fresh CI machine."""
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DISABLED", "WANDB_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def test_mode_is_decided_up_front(monkeypatch, tmp_path, no_wandb_account):
    assert decide_mode() == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert decide_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert decide_mode() == "disabled"
    assert decide_mode("offline") == "offline"
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.delenv("WANDB_MODE")
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    monkeypatch.setenv("NETRC", str(netrc))
    assert decide_mode() == "online"
    with pytest.raises(ValueError, match="logger.wandb.mode"):
        decide_mode("cloud")


def test_group_and_tags():
    assert run_group("density_grid25", {"sweep_dir": None}) == "density_grid25"
    assert (
        run_group("density_grid25", {"sweep_dir": "/o/multiruns/2026-01-01_00-00-00"})
        == "density_grid25-2026-01-01_00-00-00"
    )
    tags = override_tags(["seed=1", "proposal.scale=2", "x=" + "y" * 100], extra=["mine", "seed=1"])
    assert tags[:3] == ["mine", "seed=1", "proposal.scale=2"]
    assert len(tags) == 4 and len(tags[3]) == 64


def test_offline_run_reads_back(tmp_path, monkeypatch, no_wandb_account):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    run_dir = tmp_path / "run"
    cfg = compose(
        [
            "experiment=density_grid25",
            "debug=fast",
            "logger=both",
            "plot=true",
            "logger.wandb.tags=[smoke]",
            f"paths.output_dir={run_dir}",
        ]
    )
    train(cfg)
    import wandb

    wandb.teardown()  # the W&B service may still hold buffered records after run.finish(); flush them

    assert not any(cwd.iterdir()), "W&B wrote into the current directory"
    run = read_offline_run(run_dir)
    run_id = (run_dir / "wandb" / RUN_ID_FILE).read_text().strip()
    assert run["runs"] == [{"id": run_id, "group": "density_grid25", "tags": ["smoke"]}]

    # The whole resolved config, flat.
    assert run["config"]["model.net.lr"] == cfg.model.net.lr
    assert run["config"]["sampler.num_accepted"] == 1000
    assert run["config"]["task.target.name"] == "grid25"
    assert run["config"]["seed"] == 0

    # Per-epoch sampling stats and metrics: the same numbers as epochs.jsonl.
    epochs = [json.loads(line) for line in (run_dir / "epochs.jsonl").read_text().splitlines()]
    logged = [row for row in run["history"] if "sampling/acceptance_rate" in row]
    assert len(logged) == len(epochs) == 2
    for row, epoch in zip(logged, epochs):
        assert row["epoch"] == epoch["epoch"]
        for key in (
            "sampling/acceptance_rate",
            "sampling/proposals",
            "sampling/accepted",
            "sampling/envelope_violations",
            "sampling/seconds",
            "train/loss",
        ):
            assert row[key] == pytest.approx(epoch[key], rel=1e-6), key
    assert any("val/nll" in row for row in run["history"])
    assert [row["run_plot/count"] for row in run["history"] if "run_plot/_type" in row] == [1]
    images = list((run_dir / "wandb").glob("offline-run-*/files/media/images/run_plot_*.png"))
    assert len(images) == 1

    # Final metrics in the summary.
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("val/nll", "val/energy_distance", "before/val/nll", "sampling/acceptance_rate", "wall_seconds"):
        assert run["summary"][key] == pytest.approx(metrics[key], rel=1e-9), key
