"""`varkit train trainer=ddp_cpu`: two CPU processes (gloo) as a real subprocess (DDP under pytest would re-run
pytest per rank), with shards split by node and per-rank seeds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from var_stage_data import make_tiny_stage, train_overrides


@pytest.mark.slow
@pytest.mark.ddp
def test_two_process_cpu_ddp_trains_and_exports(tmp_path: Path) -> None:
    stage = make_tiny_stage(tmp_path / "stage", train_per_class=8, train_shards=4, val_shards=2)
    overrides = train_overrides(
        stage,
        tmp_path,
        "trainer=ddp_cpu",
        "trainer.precision=32-true",
        "trainer.max_steps=4",
        "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false",
        "callbacks.sample_grid.every_n_steps=0",
        "optim.lr=null",
        "optim.base_lr=0.032",
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "varkit", "train", *overrides], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = tmp_path / "runs" / "var-demo"
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 4
    assert (run / "model" / "model.safetensors").is_file()
    # the learning-rate scaling rule sees the global batch: 8 per rank x 2 ranks
    logs = result.stdout + result.stderr
    assert "global batch 16 = 8 per device x 2 devices" in logs
    assert "peak learning rate 0.002" in logs  # 0.032 * 16 / 256
    # per-rank random streams (drop path, class dropout) are all saved, and they differ between the ranks
    ranks = checkpoint["varkit_rng"]["ranks"]
    assert len(ranks) == 2
    assert not torch.equal(ranks[0]["class_dropout"], ranks[1]["class_dropout"])
    hparams = checkpoint["hyper_parameters"]
    assert hparams["optim"]["batch_size"] == 8
