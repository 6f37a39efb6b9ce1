"""``varkit train`` / ``varkit sample`` end to end on tiny data: artefacts, checkpoints, export, SIGKILL resume."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from var_stage_data import make_tiny_stage, train_overrides

from varkit.cli import main


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train_var")
    stage = make_tiny_stage(root)
    assert main(["train", *train_overrides(stage, root)]) == 0
    return {**stage, "root": root, "run": root / "runs" / "var-demo"}


def test_run_directory_holds_checkpoints_config_samples_and_export(tiny_run: dict[str, Path]) -> None:
    run = tiny_run["run"]
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / ".hydra" / "config.yaml").is_file()
    assert list((run / "samples").glob("step*.png"))  # the end-of-training grid
    exported = json.loads((run / "model" / "config.json").read_text())
    assert exported["kind"] == "var"
    # the model's scales/codebook come from the tokenizer, not from conf/model
    tokenizer = json.loads((tiny_run["tokenizer"] / "config.json").read_text())["config"]
    assert exported["config"]["scales"] == tokenizer["scales"]
    assert exported["config"]["codebook_size"] == tokenizer["quantizer"]["codebook_size"]
    reference = json.loads((run / "model" / "tokenizer.json").read_text())
    # relative to the generator folder (a run folder moved with its tokenizer keeps working), absolute as fallback
    assert (run / "model" / reference["path"]).resolve() == tiny_run["tokenizer"].resolve()
    assert Path(reference["absolute_path"]) == tiny_run["tokenizer"].resolve()
    assert json.loads((run / "model" / "classes.json").read_text())["red_circle"] == 0


def test_checkpoint_loads_weights_only_with_plain_hparams_ema_and_rng(tiny_run: dict[str, Path]) -> None:
    checkpoint = torch.load(tiny_run["run"] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    params = checkpoint["hyper_parameters"]
    assert isinstance(params["model"], dict) and isinstance(params["optim"], dict)
    assert params["model"]["scales"] == [1, 2, 3, 4]
    assert checkpoint["global_step"] == 4
    ema_state = next(v for k, v in checkpoint["callbacks"].items() if "EMA" in k)
    assert ema_state["updates"] == 4
    assert "head.weight" in ema_state["shadow"]
    assert set(ema_state["shadow"]) <= {k.removeprefix("model.") for k in checkpoint["state_dict"]}
    (streams,) = checkpoint["varkit_rng"]["ranks"]  # one rank: its drop-path and class-dropout streams
    assert "class_dropout" in streams and "torch" in streams
    assert all(k.startswith("model.") for k in checkpoint["state_dict"])  # the tokenizer is not stored


def test_exported_weights_are_the_ema(tiny_run: dict[str, Path]) -> None:
    from safetensors.torch import load_file

    checkpoint = torch.load(tiny_run["run"] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    shadow = next(v for k, v in checkpoint["callbacks"].items() if "EMA" in k)["shadow"]
    exported = load_file(tiny_run["run"] / "model" / "model.safetensors")
    name = "head.weight"
    torch.testing.assert_close(exported[name], shadow[name])
    assert not torch.equal(exported[name], checkpoint["state_dict"][f"model.{name}"])


def test_metrics_include_per_scale_loss_accuracy_and_throughput(tiny_run: dict[str, Path]) -> None:
    with (tiny_run["run"] / "csv" / "metrics.csv").open() as handle:
        columns = set(next(csv.reader(handle)))
    expected = {"train/loss", "train/ce_last", "train/acc", "train/acc_last", "train/lr", "train/grad_norm"}
    expected |= {f"train/{m}_s{k}" for m in ("ce", "acc") for k in range(4)}
    expected |= {"val/ce", "val/acc_last", "val/ce_s3", "throughput/tokens_per_s", "throughput/tflops"}
    assert expected <= columns


def test_sample_writes_pngs_grid_and_adm_npz(tiny_run: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "samples"
    args = [f"model_dir={tiny_run['run'] / 'model'}", "classes=[1,4]", "per_class=3", "npz=true", "progress=false"]
    assert main(["sample", *args, f"output={out}", "top_k=10", "top_p=0.9", "cfg_schedule=constant"]) == 0
    arrays = np.load(out / "samples.npz")
    assert list(arrays.keys()) == ["arr_0"]
    assert arrays["arr_0"].shape == (6, 16, 16, 3) and arrays["arr_0"].dtype == np.uint8
    assert len(list((out / "images").glob("0001_green_square_*.png"))) == 3
    grid = Image.open(out / "grid.png")
    assert grid.size == (3 * 16 + 4 * 2, 2 * 16 + 3 * 2)  # 3 columns, 2 rows (one per class), 2px padding
    # same seed -> same images; pixels of the npz equal the PNG files
    first = np.asarray(Image.open(sorted((out / "images").glob("0001_*"))[0]))
    assert np.array_equal(first, arrays["arr_0"][0])


def test_sample_refuses_unknown_classes(tiny_run: dict[str, Path]) -> None:
    assert main(["sample", f"model_dir={tiny_run['run'] / 'model'}", "classes=[12]", "progress=false"]) == 2


def test_image_shards_with_frozen_tokenizer_and_wandb_offline(
    tiny_run: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`data=demo_images`: images are tokenized on the fly; W&B logs offline without credentials."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    demo = tiny_run["demo"]
    args = [
        f"paths.root={tmp_path}",
        "name=images",
        f"tokenizer.path={tiny_run['tokenizer']}",
        "model=var_tiny",
        "data=demo_images",
        f"data.train_urls={demo / 'train'}",
        f"data.val_urls={demo / 'val'}",
        "data.image_size=16",
        "data.batch_size=4",
        "trainer=debug",
        "trainer.max_steps=2",
        "logger=wandb",
        "callbacks.sample_grid.every_n_steps=2",
        "callbacks.sample_grid.per_class=1",
        "callbacks.sample_grid.max_classes=2",
    ]
    assert main(["train", *args]) == 0
    run = tmp_path / "runs" / "images"
    assert (run / "model" / "model.safetensors").is_file()
    offline = list((run / "wandb").glob("offline-run-*"))
    assert offline, "expected an offline W&B run folder"
    media = list(offline[0].rglob("*.png"))
    assert media, "the sample grid should be logged to W&B as an image"


def _train_command(stage: dict[str, Path], root: Path, steps: int) -> list[str]:
    overrides = train_overrides(
        stage,
        root,
        f"trainer.max_steps={steps}",
        "trainer.val_check_interval=1000",
        "trainer.limit_val_batches=0",
        "callbacks.sample_grid.at_end=false",
        "callbacks.model_checkpoint.every_n_train_steps=3",
        "data.resampled=false",
        "model.class_dropout=0.5",
        "data.hflip=true",
    )
    return [sys.executable, "-m", "varkit", "train", *overrides]


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    ema = next(v for k, v in checkpoint["callbacks"].items() if "EMA" in k)["shadow"]
    return {**checkpoint["state_dict"], **{f"ema.{k}": v for k, v in ema.items()}}


@pytest.mark.slow
def test_sigkill_then_same_command_resumes_to_identical_weights(tmp_path: Path) -> None:
    """Kill `varkit train` with SIGKILL after a checkpoint; the re-run continues (data position, optimiser, EMA,
    RNG restored) and ends with exactly the weights of an uninterrupted run."""
    stage = make_tiny_stage(tmp_path / "stage", train_per_class=4, train_shards=2)
    steps = 30  # > one epoch of 40 samples / batch 8, so the epoch boundary is crossed after the resume
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    reference_root = tmp_path / "reference"
    subprocess.run(_train_command(stage, reference_root, steps), check=True, env=env, capture_output=True)

    root = tmp_path / "interrupted"
    command = _train_command(stage, root, steps)
    run = root / "runs" / "var-demo"
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    # wait until the step-6 checkpoint is complete (step 3's last.ckpt is then fully written), then kill
    while not (run / "checkpoints" / "step0000006.ckpt").exists() and process.poll() is None:
        assert time.monotonic() < deadline, "training made no progress"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]
    assert killed_at < steps, "the run finished before it could be interrupted"

    subprocess.run(command, check=True, env=env, capture_output=True)  # the same command resumes
    resumed, reference = _final_weights(run), _final_weights(reference_root / "runs" / "var-demo")
    assert resumed.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(resumed[name], reference[name], rtol=0, atol=0, msg=name)


def test_sample_from_converted_official_weights(parity_fixture: dict, tmp_path: Path) -> None:
    """`varkit convert` output (var/ + vqvae/) samples directly; official-format weights, reference scales."""
    from varkit.checkpoint.io import convert_official

    source = tmp_path / "fixture.pt"
    torch.save(parity_fixture, source)
    convert_official(source, tmp_path / "converted")
    out = tmp_path / "samples"
    args = [f"model_dir={tmp_path / 'converted'}", "classes=[3]", "per_class=2", "npz=true", "progress=false"]
    assert main(["sample", *args, f"output={out}", "pngs=false"]) == 0
    size = parity_fixture["config"]["image_size"]
    assert np.load(out / "samples.npz")["arr_0"].shape == (2, size, size, 3)
