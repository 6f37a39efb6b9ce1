"""W&B offline runs, read back from the run folder: ``varkit train logger=wandb`` without credentials, and the
:mod:`varkit.tracking` helpers (run config, system info, histograms) on a real offline ``WandbLogger``.

The ``.wandb`` file is W&B's transaction log (a LevelDB-style log of ``wandb_internal_pb2.Record`` protobufs);
wandb 0.31 ships no reader for it, so :func:`read_wandb_records` below parses it, checking every CRC.
"""

from __future__ import annotations

import struct
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from var_stage_data import make_tiny_stage, train_overrides

from varkit.cli import main

BLOCK_SIZE = 32768
HEADER_SIZE = 7  # crc32 (4) + length (2) + chunk type (1); the file itself starts with a 7-byte ":W&B" header
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_wandb_records(path: Path) -> list[Any]:
    """Every record of a ``run-<id>.wandb`` file as ``wandb_internal_pb2.Record`` messages."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B transaction log"
    payloads, pending, position = [], b"", HEADER_SIZE
    while position + HEADER_SIZE <= len(data):
        left_in_block = BLOCK_SIZE - position % BLOCK_SIZE
        if left_in_block < HEADER_SIZE:  # block trailer padding
            position += left_in_block
            continue
        checksum, length, kind = struct.unpack("<IHB", data[position : position + HEADER_SIZE])
        if checksum == length == kind == 0:
            position += left_in_block
            continue
        chunk = data[position + HEADER_SIZE : position + HEADER_SIZE + length]
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == checksum, f"corrupt chunk at byte {position}"
        position += HEADER_SIZE + length
        if kind == FULL:
            payloads.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            payloads.append(pending + chunk)
    records = []
    for payload in payloads:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        records.append(record)
    return records


def summarise(records: list[Any]) -> dict[str, Any]:
    """History keys, config keys (top level), logged file paths and the last value of each history key."""
    import json

    history: dict[str, list[Any]] = defaultdict(list)
    config: dict[str, Any] = {}
    files: set[str] = set()
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "history":  # media and histograms arrive as nested keys (key, field)
            row: dict[str, Any] = {}
            for item in record.history.item:
                path = [item.key] if item.key else list(item.nested_key)
                target = row
                for part in path[:-1]:
                    target = target.setdefault(part, {})
                target[path[-1]] = json.loads(item.value_json)
            for key, value in row.items():
                history[key].append(value)
        elif kind == "config":
            for update in record.config.update:
                config[update.key or "/".join(update.nested_key)] = json.loads(update.value_json)
        elif kind == "files":
            files |= {f.path for f in record.files.files}
    return {"history": dict(history), "config": config, "files": files}


def flush_wandb() -> None:
    """Finish the current run and stop W&B's service: only then is the ``.wandb`` file complete on disk."""
    import wandb

    wandb.finish()
    wandb.teardown()


def offline_run(save_dir: Path) -> Path:
    runs = sorted((save_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, f"expected one offline run folder under {save_dir / 'wandb'}, found {runs}"
    return runs[0]


@pytest.fixture
def no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No W&B key anywhere: a temporary HOME (no ~/.netrc) and WANDB_DIR; WANDB_MODE unset."""
    home = tmp_path / "home"
    home.mkdir()
    for variable in ("WANDB_API_KEY", "WANDB_MODE", "NETRC", "WANDB_BASE_URL"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(home / ".config" / "wandb"))
    return home


def test_train_without_credentials_logs_offline_run_with_metrics_config_and_images(
    tmp_path: Path, no_credentials: Path
) -> None:
    stage = make_tiny_stage(tmp_path / "stage", train_per_class=4)
    overrides = train_overrides(
        stage,
        tmp_path,
        "name=tracked",
        "trainer.max_steps=2",
        "logger=wandb",
        "logger.wandb.mode=online",  # requested online: no credentials -> offline, said once
        "logger.wandb.project=varkit-tests",
        "logger.wandb.tags=[demo,tiny]",
        "callbacks.sample_grid.every_n_steps=2",
        "callbacks.sample_grid.at_end=false",
    )
    assert main(["train", *overrides]) == 0
    flush_wandb()  # what process exit does (`varkit train` leaves the run open)
    run_dir = tmp_path / "runs" / "tracked"
    assert (run_dir / "cli.log").read_text().count("no W&B credentials") == 1  # Hydra's job log
    run = offline_run(run_dir)
    summary = summarise(read_wandb_records(next(run.glob("run-*.wandb"))))

    history = summary["history"]
    assert {"train/loss", "val/ce", "trainer/global_step"} <= set(history)
    assert all(loss > 0 for loss in history["train/loss"])
    assert len(history["train/loss"]) == 2  # log_every_n_steps=1, max_steps=2
    assert max(history["trainer/global_step"]) == 2  # the grid is logged after the 2nd optimizer step

    flat = {key for value in summary["config"].values() if isinstance(value, dict) for key in value}
    assert "optim" in summary["config"] or "optim" in flat  # the resolved run config, as plain data
    images = list((run / "files" / "media" / "images").rglob("*.png"))
    assert images, "the sample grid should be logged as a W&B image"
    assert {f"media/images/{p.relative_to(run / 'files' / 'media' / 'images').as_posix()}" for p in images} <= summary[
        "files"
    ]


def test_tracking_helpers_write_config_system_info_and_histograms(tmp_path: Path, no_credentials: Path) -> None:
    import torch

    from varkit.tracking import build_wandb_logger, finish_wandb_runs, log_histogram, log_run_info

    node = {
        "_target_": "lightning.pytorch.loggers.WandbLogger",
        "project": "varkit-tests",
        "name": "helpers",
        "group": "unit",
        "tags": ["a"],
        "entity": None,
        "save_dir": str(tmp_path / "run"),
        "mode": "online",
        "log_model": False,
    }
    run_logger = build_wandb_logger(node)
    assert run_logger.experiment.settings.mode == "offline"
    log_run_info([run_logger], {"optim": {"lr": 0.001}, "model": {"depth": 2}}, world_size=1)
    usage = torch.tensor([5.0, 0.0, 3.0, 1.0])
    log_histogram(run_logger, "codebook/usage", usage, step=3, counts=True)
    log_histogram(run_logger, "codebook/frequency", usage / usage.sum(), step=3)
    first_id = run_logger.experiment.id
    finish_wandb_runs([run_logger])
    # the next job in this process (Hydra multirun) gets its own run instead of attaching to the first one
    second = build_wandb_logger({**node, "save_dir": str(tmp_path / "second")})
    assert second.experiment.id != first_id
    finish_wandb_runs([second])
    flush_wandb()
    assert len(list((tmp_path / "second" / "wandb").glob("offline-run-*"))) == 1

    summary = summarise(read_wandb_records(next(offline_run(tmp_path / "run").glob("run-*.wandb"))))
    assert summary["config"]["optim"] == {"value": {"lr": 0.001}} or summary["config"]["optim"] == {"lr": 0.001}
    system = summary["config"]["system"]
    system = system.get("value", system)
    assert system["world_size"] == 1 and system["torch"] == torch.__version__ and system["device"] == "cpu"
    histogram = summary["history"]["codebook/usage"][-1]
    assert histogram["_type"] == "histogram"
    assert histogram["values"] == [5, 0, 3, 1] and histogram["bins"] == [0, 1, 2, 3, 4]
    assert summary["history"]["codebook/frequency"][-1]["_type"] == "histogram"
    assert summary["history"]["trainer/global_step"][-1] == 3
