"""Nothing from a config or a file runs code: hostile ``_target_``s (also routed through varkit modules, nested,
in lists, under ``_args_``/``_partial_``, in Hydra's own node), malicious pickles in every loading path (resume,
convert, from_pretrained, evaluator/perceptual weights, tokenizer export), and path traversal in tar member names
and labels files. Each payload would create a sentinel file; the tests check it never appears."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest
import torch

from .conftest import SENTINEL_NAME, run_varkit, train_args

HOSTILE_TARGETS = [
    "os.system",
    "posix.system",
    "subprocess.run",
    "subprocess.Popen",
    "builtins.eval",
    "builtins.exec",
    "builtins.__import__",
    "importlib.import_module",
    "pickle.loads",
    "torch.load",
    "varkit.checkpoint.io.torch.load",  # torch.load as imported into a varkit module
    "varkit.plugins.os.system",  # os as imported into a varkit module
    "varkit.plugins.importlib.import_module",
    "varkit.config.OmegaConf.load",
    "varkit.safe_load.torch.load",
    "lightning.pytorch.callbacks.os.system",  # through an allowed family's module
    "lightning.pytorch.callbacks.ModelCheckpoint.__init__",
    "lightning.pytorch.loggers.csv_logs.os.system",
    "torch.optim.torch.load",
    "torchmetrics.utilities.imports.os.system",
    "lightning.pytorch.Trainer.__init__.__globals__",
    "varkit.data.modules.WebDataModule.__init__",
    "hydra.utils.instantiate",
    "hydra.utils.get_method",
    "shutil.rmtree",
]


@pytest.mark.parametrize("target", HOSTILE_TARGETS)
def test_hostile_target_is_refused_by_name(target: str, tmp_path: Path) -> None:
    result = run_varkit("config", "train_var", f"+callbacks.x._target_={target}", cwd=tmp_path)
    assert result.code == 2 and "is not allowed" in result.err and "Traceback" not in result.err, result.err


@pytest.mark.parametrize(
    "override",
    [
        "+trainer.plugins=[{_target_: os.system, _args_: [touch PWNED]}]",  # inside a list
        "+callbacks.x={_target_: lightning.pytorch.callbacks.LambdaCallback, on_fit_start: {_target_: os.system}}",
        "+callbacks.x={_target_: builtins.print, _args_: [{_target_: os.system, _args_: [touch PWNED]}]}",
        "+callbacks.x={_target_: os.system, _partial_: true}",
        "+hydra.callbacks.x={_target_: os.system}",
        "+hydra.job_logging.handlers.x={class: os.system}",
        "+hydra.job_logging.handlers.x={class: logging.StreamHandler, stream: 'ext://os.system'}",
        "hydra.launcher._target_=os.system",
        "data._target_=varkit.data.shards.os.system",
        "trainer._target_=lightning.pytorch.trainer.trainer.os.system",
        "trainer.plugins=[{_target_: lightning.pytorch.plugins.TorchCheckpointIO}]",  # torch's default on resume
    ],
)
def test_hostile_structures_are_refused(override: str, tmp_path: Path) -> None:
    result = run_varkit("train", override, "--cfg", "job", cwd=tmp_path)
    assert result.code == 2, result.err[-2000:]
    assert "not allowed" in result.err and "Traceback" not in result.err, result.err[-2000:]
    assert not (tmp_path / SENTINEL_NAME).exists() and not Path(SENTINEL_NAME).exists()
    assert not (tmp_path / "runs").exists()


def test_hostile_config_file_is_refused(tmp_path: Path) -> None:
    """What an override cannot express, a shared config file can: a logging factory (``()``) in Hydra's node."""
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "shared.yaml").write_text(
        "# @package _global_\nhydra:\n  job_logging:\n    filters:\n      x:\n        (): os.system\n"
    )
    result = run_varkit("train", "--config-dir", str(tmp_path / "conf"), "experiment=shared", cwd=tmp_path)
    assert result.code == 2 and "logging factories" in result.err and "Traceback" not in result.err, result.err
    assert not (tmp_path / "runs").exists()


def test_allow_list_checks_the_resolved_object() -> None:
    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint

    from varkit.errors import ConfigError
    from varkit.targets import allow_target, resolve_target

    assert resolve_target("lightning.pytorch.Trainer") is Trainer
    assert resolve_target("lightning.pytorch.callbacks.ModelCheckpoint") is ModelCheckpoint
    assert resolve_target("torch.optim.AdamW") is torch.optim.AdamW
    with pytest.raises(ConfigError, match="has no class"):
        resolve_target("lightning.pytorch.callbacks.NoSuchCallback")
    # a plugin extends the list explicitly, with the object (identity recorded) or its name
    from varkit import targets

    try:
        name = allow_target(json.JSONDecoder)
        assert name == "json.decoder.JSONDecoder" and resolve_target(name) is json.JSONDecoder
        allow_target("os.path.join")
        with pytest.raises(ConfigError, match=r"not an object defined in os\.path"):
            resolve_target("os.path.join")  # os.path.join lives in posixpath: the name lies about where it is from
    finally:
        targets._PLUGIN_TARGETS.pop("json.decoder.JSONDecoder", None)
        targets._PLUGIN_TARGETS.pop("os.path.join", None)


def test_safe_instantiate_refuses_before_importing(tmp_path: Path) -> None:
    import sys

    from omegaconf import OmegaConf

    from varkit.config import safe_instantiate
    from varkit.errors import ConfigError

    module = "varkit_hostile_module_never_imported"
    (tmp_path / f"{module}.py").write_text(f"open({str(tmp_path / SENTINEL_NAME)!r}, 'w').close()\n")
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(ConfigError, match="not allowed"):
            safe_instantiate(OmegaConf.create({"_target_": f"{module}.anything"}))
        with pytest.raises(ConfigError, match="not allowed"):
            safe_instantiate(OmegaConf.create({"_target_": "lightning.pytorch.Trainer"}), x={"_target_": f"{module}.f"})
    finally:
        sys.path.remove(str(tmp_path))
    assert module not in sys.modules and not (tmp_path / SENTINEL_NAME).exists()


# -- malicious pickles in every loading path ---------------------------------------------------------------------


def _loaders() -> dict:
    from varkit.checkpoint.export import tokenizer_from_checkpoint
    from varkit.checkpoint.io import convert_official
    from varkit.checkpoint.vqvae import load_official_vqvae
    from varkit.evaluation.tiny import TinyExtractor
    from varkit.nn.perceptual import load_state_file

    return {
        "convert": lambda p, out: convert_official(p, out / "c"),
        "official_vqvae": lambda p, out: load_official_vqvae(p),
        "tokenizer_export": lambda p, out: tokenizer_from_checkpoint(p),
        "tiny_evaluator": lambda p, out: TinyExtractor(weights=p),
        "perceptual": lambda p, out: load_state_file(p),
    }


@pytest.mark.parametrize("loader", ["convert", "official_vqvae", "tokenizer_export", "tiny_evaluator", "perceptual"])
def test_malicious_pickle_is_refused_in_every_loader(loader: str, evil_file, tmp_path: Path) -> None:
    from varkit.errors import UnsafeCheckpointError

    try:
        load = _loaders()[loader]
    except ImportError as err:  # a loader renamed by a concurrent refactor must fail loudly, not skip
        raise AssertionError(f"loader {loader} moved: {err}") from err
    path = evil_file("weights.pth")
    with pytest.raises(UnsafeCheckpointError, match="refused") as info:
        load(path, tmp_path)
    assert "weights_only" not in str(info.value) and "trusted source" not in str(info.value)
    assert not (tmp_path / SENTINEL_NAME).exists()


def test_pickle_renamed_safetensors_is_refused(trained_run, evil_file, tmp_path: Path) -> None:
    import shutil

    from varkit.checkpoint.io import from_pretrained
    from varkit.errors import ConfigError

    model = tmp_path / "model"
    shutil.copytree(trained_run["model"], model)
    evil = evil_file("x.pth")
    (model / "model.safetensors").write_bytes(evil.read_bytes())
    with pytest.raises(ConfigError, match="not a readable safetensors file"):
        from_pretrained(model)
    (model / "model.safetensors").write_bytes((trained_run["model"] / "model.safetensors").read_bytes()[:500])
    with pytest.raises(ConfigError, match="not a readable safetensors file"):
        from_pretrained(model)
    result = run_varkit("sample", f"model_dir={model}", f"output={tmp_path / 'out'}", cwd=tmp_path)
    assert result.code == 2 and "safetensors" in result.err and "Traceback" not in result.err, result.err[-2000:]
    assert not (tmp_path / SENTINEL_NAME).exists()


def test_resume_refuses_a_planted_checkpoint_and_keeps_metrics(stage, copy_run, evil_file, tmp_path: Path) -> None:
    """A malicious ``last.ckpt`` in a run folder: one varkit sentence (not torch's hint to turn weights_only off),
    the payload never runs, and the earlier segment's metrics.csv is still there afterwards."""
    run = copy_run()
    metrics = (run / "csv" / "metrics.csv").read_text()
    assert metrics.count("\n") >= 2
    for ckpt in (run / "checkpoints").glob("*.ckpt"):
        ckpt.unlink()
    planted = evil_file("planted.ckpt")
    os.replace(planted, run / "checkpoints" / "last.ckpt")
    result = run_varkit(*train_args(stage, run.parents[1], "trainer.max_steps=4"), cwd=tmp_path)
    assert result.code == 2, result.err[-3000:]
    assert "was refused" in result.err and "Traceback" not in result.err
    assert "trusted source" not in result.err and "weights_only` set to `False" not in result.err
    assert not (tmp_path / SENTINEL_NAME).exists()
    assert (run / "csv" / "metrics.csv").read_text().startswith(metrics.strip().splitlines()[0])
    assert metrics.strip() in (run / "csv" / "metrics.csv").read_text()


def test_resume_appends_metrics_of_each_segment(stage, copy_run, tmp_path: Path) -> None:
    run = copy_run()
    before = (run / "csv" / "metrics.csv").read_text().strip().splitlines()
    result = run_varkit(*train_args(stage, run.parents[1], "trainer.max_steps=4"), cwd=tmp_path)
    assert result.code == 0, result.err[-3000:]
    after = (run / "csv" / "metrics.csv").read_text().strip().splitlines()
    assert len(after) > len(before)
    header, *rows = after
    # skipped samples are logged by default, per reason (LogSkippedSamples is on conf/callbacks/default.yaml)
    assert {"data/skipped", "data/skipped_corrupt", "data/skipped_incomplete", "data/shard_errors"} <= set(
        header.split(",")
    )
    steps = {row.split(",")[header.split(",").index("step")] for row in rows}
    assert "0" in steps or "1" in steps, "the first segment's rows were lost"
    assert "3" in steps, "the resumed segment's rows are missing"


def test_torch_lower_bound_gives_weights_only_default(repo_root: Path) -> None:
    import re

    text = (repo_root / "pyproject.toml").read_text()
    low = re.search(r'"torch>=(\d+)\.(\d+)', text)
    assert low is not None and (int(low.group(1)), int(low.group(2))) >= (2, 6)


def test_every_torch_load_in_src_is_weights_only(repo_root: Path) -> None:
    import re

    offenders = []
    for path in (repo_root / "src").rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\btorch\.load\(", line) and "weights_only=True" not in line:
                offenders.append(f"{path.relative_to(repo_root)}:{number}")
    assert not offenders, offenders


# -- path traversal ----------------------------------------------------------------------------------------------


def _tar_with(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_tar_member_names_never_escape(stage, tmp_path: Path) -> None:
    """Member names such as ``../../x.png`` or ``/etc/x.png`` are read as keys only: tokenize writes every sample
    inside its output folder, under a plain key."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(buffer, format="PNG")
    png = buffer.getvalue()
    shards = tmp_path / "in"
    shards.mkdir()
    _tar_with(
        shards / "shard-000000.tar",
        {"../../escape.png": png, "../../escape.cls": b"1", "/tmp/abs.png": png, "/tmp/abs.cls": b"2"},
    )
    out = tmp_path / "deep" / "out"
    result = run_varkit(
        "data", "tokenize", "--tokenizer", str(stage["tokenizer"]), "--input", str(shards), "--output", str(out),
        "--no-progress", cwd=tmp_path,
    )  # fmt: skip
    assert result.code == 0, result.err[-2000:]
    assert not (tmp_path / "escape.tokens.npy").exists() and not (tmp_path / "deep" / "escape.tokens.npy").exists()
    with tarfile.open(next(out.glob("*.tar"))) as tar:
        names = tar.getnames()
    assert names and all("/" not in n and not n.startswith(".") for n in names), names


def test_pack_refuses_labels_outside_source(tmp_path: Path) -> None:
    from varkit.data.pack import pack_images

    (tmp_path / "src").mkdir()
    (tmp_path / "labels.json").write_text(json.dumps({"/etc/hostname": "a"}))
    with pytest.raises(ValueError, match="points outside"):
        pack_images(tmp_path / "src", tmp_path / "out", labels_file=tmp_path / "labels.json")
    assert not (tmp_path / "out").exists()
