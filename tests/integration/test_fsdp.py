"""`varkit train trainer=fsdp_cpu`: FSDP2 (ModelParallelStrategy) over two CPU processes (gloo), run as a real
subprocess like test_ddp.py; checks the shards, the distributed checkpoint, the unsharded export and resuming."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from var_stage_data import make_tiny_stage, train_overrides


def _train(overrides: list[str]) -> str:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "varkit", "train", *overrides], env=env, capture_output=True, text=True, timeout=600
    )
    logs = result.stdout + result.stderr
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-4000:]
    return logs


def _checkpoint_meta(path: Path) -> dict:
    # a distributed checkpoint is a folder: per-rank shards + meta.pt (everything but weights/optimiser states)
    assert path.is_dir(), f"{path} should be a distributed checkpoint folder"
    assert len(list(path.glob("*.distcp"))) == 2  # one shard file per rank
    return torch.load(path / "meta.pt", map_location="cpu", weights_only=True)


@pytest.mark.slow
@pytest.mark.ddp
def test_two_process_cpu_fsdp2_shards_exports_and_resumes(tmp_path: Path) -> None:
    from varkit.checkpoint.io import from_pretrained
    from varkit.models.var import VAR

    stage = make_tiny_stage(tmp_path / "stage", train_per_class=8, train_shards=4, val_shards=2)
    common = [
        "trainer=fsdp_cpu",
        "trainer.precision=32-true",
        "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false",
        "callbacks.sample_grid.every_n_steps=0",
        "optim.total_steps=6",
    ]
    logs = _train(train_overrides(stage, tmp_path, *common, "trainer.max_steps=4"))
    # both ranks hold half of the parameters (FSDP2 shards dim 0 of every tensor over the 2 ranks)
    pattern = r"FSDP2: sharded \d+ blocks over 2 ranks; rank (\d) holds (\d+) of (\d+)"
    holdings = {int(rank): (int(local), int(total)) for rank, local, total in re.findall(pattern, logs)}
    assert set(holdings) == {0, 1}, logs[-3000:]
    total = holdings[0][1]
    assert holdings[0][0] + holdings[1][0] == total
    assert all(local < 0.6 * total for local, _ in holdings.values())

    run = tmp_path / "runs" / "var-demo"
    meta = _checkpoint_meta(run / "checkpoints" / "last.ckpt")
    assert meta["global_step"] == 4
    ema_state = meta["callbacks"]["EMA"]["shadow"]
    # the EMA is stored whole (gathered from the shards), so it restores under any world size
    model_dir = run / "model"
    model = from_pretrained(model_dir, expect="var")  # strict load into a plain VAR
    assert isinstance(model, VAR)
    exported = model.state_dict()
    reference = VAR.from_config(meta["hyper_parameters"]["model"]).state_dict()
    assert set(exported) == set(reference)
    for name, tensor in reference.items():
        assert exported[name].shape == tensor.shape, name  # whole tensors, not shards
    for name, average in ema_state.items():
        assert average.shape == reference[name].shape, name
        torch.testing.assert_close(exported[name], average)  # the export holds the EMA weights
    assert (run / "samples" / "step0000004.png").is_file()  # sampled by both ranks in lockstep, written by rank 0

    # the same 4 steps under DDP: sharding changes where the tensors live, not the arithmetic
    ddp_root = tmp_path / "ddp"
    ddp_common = [c for c in common if not c.startswith("trainer=")]
    _train(train_overrides(stage, ddp_root, "trainer=ddp_cpu", *ddp_common, "trainer.max_steps=4"))
    replicated = from_pretrained(ddp_root / "runs" / "var-demo" / "model", expect="var").state_dict()
    for name, tensor in replicated.items():
        torch.testing.assert_close(exported[name], tensor, rtol=1e-4, atol=1e-5, msg=name)

    # re-running with more steps resumes from the distributed last.ckpt/
    # (with the in-training FID callback on: under FSDP2 both ranks must sample, or rank 0 waits forever)
    quality = (
        "+callbacks.sample_quality={_target_: varkit.lit.eval_callback.SampleQuality, "
        f"reference: '{stage['demo'] / 'val'}', every_n_steps: 0, classes: [0, 1], per_class: 2, batch_size: 8}}"
    )
    logs = _train(train_overrides(stage, tmp_path, *common, "trainer.max_steps=6", quality))
    assert re.search(r"step 6: FID [0-9.]+, IS [0-9.]+ on 4 samples", logs), logs[-3000:]
    assert "resuming from" in logs
    assert "Restored all states from the checkpoint" in logs, logs[-3000:]
    meta = _checkpoint_meta(run / "checkpoints" / "last.ckpt")
    assert meta["global_step"] == 6
    assert meta["callbacks"]["EMA"]["updates"] == 6  # the average continued rather than restarting
    resumed = from_pretrained(model_dir, expect="var").state_dict()
    assert any(not torch.equal(resumed[n], exported[n]) for n in ema_state)
