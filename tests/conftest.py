"""Shared fixtures: the real ``conf/`` composed with Hydra's compose API, paths, isolated run directories."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES_DIR = REPO_ROOT.parent / "shared" / "fixtures"


def pytest_configure(config: pytest.Config) -> None:
    # tests never talk to W&B servers; offline runs go to the test's temporary folders
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    # the training linears' backend is pinned, not probed per process: resume tests compare runs bit for bit across
    # processes, and `auto` could decide differently in two processes on a CPU where both backends are close
    from varkit.nn import cpu_linear

    os.environ.setdefault("VARKIT_TRAIN_LINEAR", "onednn" if cpu_linear.onednn_linear_available() else "aten")
    cpu_linear.set_train_linear_backend(os.environ["VARKIT_TRAIN_LINEAR"])  # the module read the variable on import
    torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device (none on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def parity_fixture() -> dict:
    path = FIXTURES_DIR / "var_parity_a.pt"
    if not path.is_file():
        pytest.skip(f"reference parity fixture not found at {path} (the shared/ folder is absent)")
    return torch.load(path, weights_only=True)


@pytest.fixture
def compose_cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., DictConfig]:
    """Compose a primary config of the real ``conf/`` with overrides; outputs go under ``tmp_path``."""
    from varkit.config import compose

    monkeypatch.setenv("VARKIT_HOME", str(tmp_path))

    def _compose(config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
        return compose(config_name, [f"hydra.run.dir={tmp_path / 'run'}", *overrides])

    return _compose
