"""Shared inputs of the reliability suite: a tiny stage (tokenizer, image and token shards), a short trained run,
hostile files, and an in-process ``varkit`` runner that captures exit code, stdout and stderr."""

from __future__ import annotations

import io
import os
import shutil
import sys
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from var_stage_data import TINY_TRAIN_OVERRIDES, make_tiny_stage

#: a payload that would create this file if it were ever unpickled
SENTINEL_NAME = "PWNED"


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def errors(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("varkit: error:")]


def run_varkit(*args: str, cwd: Path | None = None) -> Result:
    """``varkit.cli.main(args)`` in this process (fast: no interpreter start), output captured."""
    from varkit.cli import main

    out, err = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exit_:  # argparse errors
                code = int(exit_.code or 0) if not isinstance(exit_.code, str) else 1
    finally:
        os.chdir(previous)
    return Result(int(code), out.getvalue(), err.getvalue())


class Evil:
    """Unpickling this runs ``touch <sentinel>``."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        import os as _os

        return (_os.system, (f"touch {self.sentinel}",))


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` with size and mtime (to prove nothing was written, changed or deleted)."""
    state: dict[str, tuple] = {}
    for path in sorted(root.rglob("*")):
        info = path.stat()
        state[str(path.relative_to(root))] = (info.st_size, info.st_mtime_ns) if path.is_file() else ("dir",)
    return state


@pytest.fixture(scope="session")
def stage(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny tokenizer + demo image shards + token shards (with the tokenizer's identity in tokens.json)."""
    import json

    from varkit.checkpoint.io import from_pretrained
    from varkit.checkpoint.tokenizer_source import tokenizer_identity

    root = tmp_path_factory.mktemp("stage")
    paths = make_tiny_stage(root)
    vae = from_pretrained(paths["tokenizer"], expect="vqvae")
    identity = tokenizer_identity(vae, paths["tokenizer"])
    for split in ("train", "val"):
        info_file = paths["tokens"] / split / "tokens.json"
        info = json.loads(info_file.read_text())
        info["tokenizer"] = identity
        info_file.write_text(json.dumps(info))
    return {**paths, "root": root}


def train_args(stage: dict[str, Path], root: Path, *extra: str) -> list[str]:
    return [
        "train",
        f"paths.root={root}",
        f"tokenizer.path={stage['tokenizer']}",
        f"data.train_urls={stage['tokens'] / 'train'}",
        f"data.val_urls={stage['tokens'] / 'val'}",
        f"export.classes={stage['demo'] / 'classes.json'}",
        *TINY_TRAIN_OVERRIDES,
        "callbacks.sample_grid.at_end=false",
        *extra,
    ]


@pytest.fixture(scope="session")
def trained_run(stage: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One 2-step ``varkit train`` run (checkpoint, metrics, exported generator), never modified by tests."""
    root = tmp_path_factory.mktemp("trained")
    result = run_varkit(*train_args(stage, root, "trainer.max_steps=2"))
    assert result.code == 0, result.err[-3000:]
    run = root / "runs" / "var-demo"
    assert (run / "model" / "model.safetensors").is_file()
    return {"root": root, "run": run, "model": run / "model"}


@pytest.fixture
def copy_run(trained_run: dict[str, Path], tmp_path: Path) -> Callable[[], Path]:
    """A private copy of the trained run's folder tree (``<tmp>/runs/var-demo``) to damage."""

    def _copy() -> Path:
        target = tmp_path / "copy" / "runs" / "var-demo"
        shutil.copytree(trained_run["run"], target)
        return target

    return _copy


@pytest.fixture
def evil_file(tmp_path: Path) -> Callable[[str], Path]:
    """``evil_file(name)``: a ``torch.save`` file whose unpickling would create ``tmp_path/PWNED``."""

    def _make(name: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": {"w": torch.zeros(2)}, "payload": Evil(tmp_path / SENTINEL_NAME)}, path)
        return path

    return _make
