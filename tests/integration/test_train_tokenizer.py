"""``varkit train-tokenizer`` end to end: tiny runs, SIGKILL + resume, export, config errors, a bf16 f16 run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from varkit.cli import main

TINY = [
    "tokenizer=vqvae_tiny",
    "schedule.sizes=[1,2,3,4]",
    "data.image_size=16",
    "data.batch_size=4",
    "data.shuffle_buffer=8",
    "trainer=debug",
    "trainer.val_check_interval=4",
    "optim.warmup_steps=2",
    "gan.enabled=true",
    "gan.start_step=2",
    "gan.discriminator.base_channels=16",
    "gan.discriminator.num_layers=2",
    "codebook.usage_window=2",
    "codebook.restart_every=3",
    "callbacks.model_checkpoint.every_n_train_steps=2",
]


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``paths.root`` with a tiny demo dataset: 24 train images (6 batches of 4 per epoch), 8 val images."""
    from varkit.data.demo import generate_demo

    root = tmp_path_factory.mktemp("varkit_home")
    generate_demo(
        root / "data" / "demo", image_size=16, train_per_class=6, val_per_class=2, num_classes=4, train_shards=2,
        val_shards=1,
    )  # fmt: skip
    return root


def _command(root: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "varkit", "train-tokenizer", *TINY, f"paths.root={root}", f"name={name}", *extra]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"})
    return env


def _load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _loader_state(node: Any) -> dict | None:
    """The StreamLoader state (data position) stored somewhere inside a Lightning checkpoint's loop state."""
    if isinstance(node, dict):
        if {"batches", "positions", "epoch"} <= set(node):
            return node
        for value in node.values():
            found = _loader_state(value)
            if found is not None:
                return found
    elif isinstance(node, (list, tuple)):
        for value in node:
            found = _loader_state(value)
            if found is not None:
                return found
    return None


def test_sigkill_then_same_command_resumes_exactly(demo_root: Path) -> None:
    """Kill a run (SIGKILL) after a checkpoint exists; the same command resumes and ends where an uninterrupted
    run ends, weight for weight: step, optimisers, discriminator, LR schedules and data position were restored."""
    steps = ["trainer.max_steps=8"]
    straight = subprocess.run(
        _command(demo_root, "straight", *steps), env=_env(), capture_output=True, text=True, timeout=300
    )
    assert straight.returncode == 0, straight.stderr[-3000:]

    run_dir = demo_root / "runs" / "interrupted"
    command = _command(demo_root, "interrupted", *steps)
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_checkpoint = run_dir / "checkpoints" / "step0000004.ckpt"
    deadline = time.monotonic() + 240
    while not first_checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (run_dir / "tokenizer").exists()
    killed_at = _load(run_dir / "checkpoints" / "last.ckpt")["global_step"]
    assert 2 <= killed_at < 8  # last.ckpt may still be the previous one when the kill lands

    resumed = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restoring states from the checkpoint" in resumed.stderr + resumed.stdout

    final_straight = _load(demo_root / "runs" / "straight" / "checkpoints" / "last.ckpt")
    final_resumed = _load(run_dir / "checkpoints" / "last.ckpt")
    assert final_straight["global_step"] == final_resumed["global_step"] == 8
    # data position: 8 batches of a 6-batch epoch -> epoch 1, 2 batches in, in both runs
    for checkpoint in (final_straight, final_resumed):
        position = _loader_state(checkpoint["loops"])
        assert position is not None and (position["epoch"], position["batches"]) == (1, 2)
    for key, value in final_straight["state_dict"].items():
        torch.testing.assert_close(final_resumed["state_dict"][key], value, rtol=0, atol=1e-5, msg=key)
    assert any(k.startswith("discriminator.") for k in final_resumed["state_dict"])
    # both optimisers (VQVAE, discriminator) and both LR schedules continued from the checkpoint
    assert len(final_resumed["optimizer_states"]) == 2 and len(final_resumed["lr_schedulers"]) == 2
    for straight_opt, resumed_opt in zip(final_straight["optimizer_states"], final_resumed["optimizer_states"]):
        for index, state in straight_opt["state"].items():
            torch.testing.assert_close(resumed_opt["state"][index]["exp_avg"], state["exp_avg"], rtol=0, atol=1e-5)
            assert float(resumed_opt["state"][index]["step"]) == float(state["step"])
    assert [s["last_epoch"] for s in final_resumed["lr_schedulers"]] == [8, 8]

    # the exported tokenizer loads with the checkpoint layer and equals the checkpoint's VQVAE
    from varkit.checkpoint.export import tokenizer_from_checkpoint
    from varkit.checkpoint.io import from_pretrained

    exported = from_pretrained(run_dir / "tokenizer", expect="vqvae")
    from_checkpoint = tokenizer_from_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(exported.reconstruct(images), from_checkpoint.reconstruct(images))
    assert list((run_dir / "images").glob("reconstructions_step*.png")), "no reconstruction grid was written"
    metrics = (run_dir / "csv" / "metrics.csv").read_text()
    for column in ("val/psnr", "val/ssim", "val/codebook/usage_s3", "train/codebook/perplexity_s0", "train/disc_loss"):
        assert column in metrics


def test_cfg_job_and_config_errors(demo_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = [*TINY, f"paths.root={demo_root}", "name=errors"]
    assert main(["train-tokenizer", *base, "--cfg", "job"]) == 0
    assert "restart_every: 3" in capsys.readouterr().out

    cases = {
        "trainer.gradient_clip_val=1.0": "optim.grad_clip",
        "data.image_size=32": "image_size",
        "+loss.l3_weight=1": "unknown key(s) l3_weight in 'loss'",
        "trainer.max_steps=-1": "trainer.max_steps must be a positive",
        "schedule.sizes=[1,2,3]": "last scale",
        "trainer.strategy=ddp": "ddp_find_unused_parameters_true",
    }
    for override, message in cases.items():
        assert main(["train-tokenizer", *base, override]) == 2, override
        err = capsys.readouterr().err
        assert "varkit: error:" in err and message in err, (override, err)
    assert not (demo_root / "runs" / "errors" / "checkpoints").exists()


@pytest.mark.slow
def test_vqvae_f16_bf16_steps(demo_root: Path) -> None:
    """A few bf16-mixed steps of the released tokenizer's architecture on 64 px images (4x4 latents)."""
    from varkit.data.demo import generate_demo

    generate_demo(demo_root / "data" / "demo64", image_size=64, train_per_class=2, val_per_class=1, num_classes=2)
    overrides = [
        "tokenizer=vqvae_f16",
        "tokenizer.image_size=64",
        "schedule=explicit",
        "schedule.sizes=[1,2,3,4]",
        "data.image_size=64",
        "data.batch_size=1",
        "data.shuffle_buffer=0",
        f"data.train_urls={demo_root}/data/demo64/train",
        f"data.val_urls={demo_root}/data/demo64/val",
        "trainer=cpu",
        "trainer.precision=bf16-mixed",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1",
        "optim.warmup_steps=1",
        "gan.enabled=true",
        "gan.start_step=1",
        "callbacks.model_checkpoint.every_n_train_steps=2",
        f"paths.root={demo_root}",
        "name=f16",
    ]
    assert main(["train-tokenizer", *overrides]) == 0
    run_dir = demo_root / "runs" / "f16"
    checkpoint = _load(run_dir / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 2
    assert checkpoint["hyper_parameters"]["tokenizer"]["base_channels"] == 160
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())
    assert (run_dir / "tokenizer" / "model.safetensors").is_file()
