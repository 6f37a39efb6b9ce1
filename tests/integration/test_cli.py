"""The ``varkit`` command line as a user runs it (real subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


def varkit(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "varkit", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )


def test_help_lists_commands() -> None:
    out = varkit("--help")
    assert out.returncode == 0
    for command in (
        "list",
        "config",
        "data",
        "train-tokenizer",
        "train",
        "sample",
        "eval",
        "edit",
        "convert",
        "quickstart",
    ):
        assert command in out.stdout, command


def test_list_prints_every_kind_with_origin() -> None:
    out = varkit("list")
    assert out.returncode == 0, out.stderr
    for header in ("quantizer (", "schedule (", "attention (", "cfg_schedule ("):
        assert header in out.stdout
    assert "var_256  " in out.stdout and "[built-in]" in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["config", "train_var", "attention=nosuch"], "Could not find 'attention/nosuch'"),
        (["config", "train_var", "trainer.max_stepz=3"], "max_stepz"),
        (["config", "train_tokenizer", "schedule=explicit", "schedule.sizes=[1,3,2]"], "grow strictly"),
        (["config", "train_tokenizer", "quantizer.name=msvqq"], "Did you mean 'msvq'"),
        (["config", "train_tokenizer", "logger.csv._target_=os.system"], "is not allowed"),
        (["list", "nokind"], "unknown kind 'nokind'"),
    ],
)
def test_bad_input_is_one_clear_message(args: list[str], message: str) -> None:
    out = varkit(*args)
    assert out.returncode == 2, out.stdout + out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) <= 3


def test_hydra_command_prints_composed_job_config(tmp_path: Path) -> None:
    out = varkit("train", "attention=eager", "trainer.max_steps=7", "--cfg", "job", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    cfg = yaml.safe_load(out.stdout)
    assert cfg["attention"]["name"] == "eager" and cfg["trainer"]["max_steps"] == 7
    assert not (tmp_path / "runs").exists()  # printing the config runs nothing


def test_hydra_command_bad_override_is_one_message(tmp_path: Path) -> None:
    out = varkit("train", "model=var_d999", "--cfg", "job", cwd=tmp_path)
    assert out.returncode != 0
    assert "Could not find 'model/var_d999'" in out.stderr and "Traceback" not in out.stderr
