"""``varkit train experiment=cca_var init_from=...`` end to end on tiny data: the frozen reference model stays out of
the checkpoint and the EMA, resuming rebuilds it and continues to the same weights, and the export samples without
guidance (``varkit sample cfg=0``)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from var_stage_data import make_tiny_stage, train_overrides

from varkit.cli import main

CCA = [
    "experiment=cca_var",
    "optim.total_steps=4",
    "trainer.val_check_interval=2",
    "trainer.log_every_n_steps=1",
    "callbacks.sample_grid.at_end=false",
]


def _start_generator(stage: dict[str, Path], folder: Path) -> Path:
    """A starting generator directory: a var_tiny transformer with non-trivial weights on the stage's tokenizer."""
    from varkit.checkpoint.generator import write_generator
    from varkit.checkpoint.tokenizer_source import load_tokenizer
    from varkit.models.factory import model_arguments
    from varkit.models.var import VAR
    from varkit.models.var_presets import var_preset

    tokenizer = load_tokenizer(stage["tokenizer"])
    torch.manual_seed(5)
    model = VAR.from_config(model_arguments(var_preset("var_tiny"), tokenizer, "sdpa"))
    with torch.no_grad():
        model.head.weight.normal_(std=0.05)  # the fresh head is zero-initialised: give the classes a say
        model.class_embedding.weight.normal_(std=0.5)
    return write_generator(model, folder, stage["tokenizer"], classes=[f"c{i}" for i in range(10)])


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny data and a starting generator directory."""
    root = tmp_path_factory.mktemp("cca")
    stage = make_tiny_stage(root)
    return {**stage, "root": root, "start": _start_generator(stage, root / "start")}


def _weights(run: Path) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return checkpoint["state_dict"]


@pytest.fixture(scope="module")
def cca_run(stage: dict[str, Path]) -> Path:
    root = stage["root"] / "full"
    overrides = train_overrides(stage, root, *CCA, f"init_from={stage['start']}", "trainer.max_steps=4")
    assert main(["train", *overrides]) == 0
    return root / "runs" / "var-demo-cca"


def test_cca_trains_from_init_from_and_keeps_the_reference_out_of_checkpoints(
    stage: dict[str, Path], cca_run: Path
) -> None:
    from safetensors.torch import load_file

    start = load_file(stage["start"] / "model.safetensors")
    checkpoint = torch.load(cca_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    state = checkpoint["state_dict"]
    # the transformer's own keys only: no frozen copy under any name
    assert set(state) == {f"model.{k}" for k in start}
    assert checkpoint["hyper_parameters"]["objective"]["name"] == "cca"
    assert checkpoint["hyper_parameters"]["objective"]["reference"] == str(stage["start"])
    ema = next(v for k, v in checkpoint["callbacks"].items() if "EMA" in k)["shadow"]
    assert set(ema) == set(start)  # the average covers the trained weights only
    optimizer_state = checkpoint["optimizer_states"][0]
    assert sum(len(g["params"]) for g in optimizer_state["param_groups"]) == len(start)
    # started from init_from, then moved away from it
    assert not torch.equal(state["model.head.weight"], start["head.weight"])
    assert (state["model.head.weight"] - start["head.weight"]).abs().max() < 0.5
    with (cca_run / "csv" / "metrics.csv").open() as handle:
        columns = set(next(csv.reader(handle)))
    assert {"train/loss", "train/cca/margin", "train/cca/pair_accuracy", "train/acc", "val/ce"} <= columns


def test_exported_model_samples_without_guidance(cca_run: Path, tmp_path: Path) -> None:
    import json

    exported = json.loads((cca_run / "model" / "config.json").read_text())
    assert exported["kind"] == "var" and exported["config"]["width"] == 64
    output = tmp_path / "samples"
    arguments = [f"model_dir={cca_run / 'model'}", "cfg=0", "per_class=2", "classes=[0,3]", f"output={output}"]
    assert main(["sample", *arguments, "progress=false", "npz=true"]) == 0
    assert len(list((output / "images").glob("*.png"))) == 4
    import numpy as np

    with np.load(output / "samples.npz") as samples:
        assert samples["arr_0"].shape[0] == 4


def test_stopped_then_rerun_resumes_to_the_same_weights(
    stage: dict[str, Path], cca_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = stage["root"] / "resumed"
    common = [*CCA, f"init_from={stage['start']}"]
    assert main(["train", *train_overrides(stage, root, *common, "trainer.max_steps=2")]) == 0
    run = root / "runs" / "var-demo-cca"
    assert torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 2
    # the same command with more steps resumes: the reference is rebuilt from init_from (not from the fine-tuned
    # checkpoint), so the loss and the updates continue exactly as in the uninterrupted run
    capsys.readouterr()
    assert main(["train", *train_overrides(stage, root, *common, "trainer.max_steps=4")]) == 0
    assert "resuming from" in capsys.readouterr().out
    resumed, uninterrupted = _weights(run), _weights(cca_run)
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        torch.testing.assert_close(resumed[name], uninterrupted[name], rtol=0, atol=0, msg=name)


def test_unknown_objective_is_one_clear_error(stage: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    overrides = train_overrides(stage, stage["root"] / "bad", "objective.name=ccaa", "trainer.max_steps=1")
    assert main(["train", *overrides]) == 2
    assert "Known training objectives: cca, next_scale_ce" in capsys.readouterr().err


def test_init_from_a_missing_directory_is_one_clear_error(
    stage: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    overrides = train_overrides(stage, stage["root"] / "bad2", *CCA, f"init_from={stage['root'] / 'nowhere'}")
    assert main(["train", *overrides]) == 2
    assert "not a generator directory" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.ddp
def test_two_process_fsdp2_shards_the_policy_and_keeps_a_whole_frozen_reference(tmp_path: Path) -> None:
    import os
    import re
    import subprocess
    import sys

    from safetensors.torch import load_file

    stage = make_tiny_stage(tmp_path / "stage", train_per_class=8, train_shards=4, val_shards=2)
    start = _start_generator(stage, tmp_path / "start")
    overrides = train_overrides(
        stage,
        tmp_path,
        *CCA,
        f"init_from={start}",
        "trainer=fsdp_cpu",
        "trainer.precision=32-true",
        "trainer.max_steps=2",
        "trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false",
    )
    result = subprocess.run(
        [sys.executable, "-m", "varkit", "train", *overrides],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    logs = result.stdout + result.stderr
    assert result.returncode == 0, logs[-4000:]
    assert len(re.findall(r"FSDP2: sharded \d+ blocks over 2 ranks", logs)) == 2
    assert len(re.findall(r"frozen reference model from", logs)) == 2  # one whole copy per rank
    exported = load_file(tmp_path / "runs" / "var-demo-cca" / "model" / "model.safetensors")
    initial = load_file(start / "model.safetensors")
    assert exported.keys() == initial.keys()
    assert not torch.equal(exported["head.weight"], initial["head.weight"])
