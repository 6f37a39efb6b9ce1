"""A built wheel, installed in a fresh virtual environment, finds its configs through the installed CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow


def test_wheel_install_finds_conf(repo_root: Path, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(repo_root),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(dist.glob("varkit-*.whl"))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # dependencies (torch, hydra, ...) come from this environment's site-packages, varkit only from the wheel:
    # a path listed in a .pth file is added to sys.path, but .pth files inside it (our editable install) are not run
    (site / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # pip's --python installs into the fresh environment, with console scripts bound to its interpreter
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # plugins installed in editable mode here are visible by metadata but not importable from the new environment
    env["VARKIT_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    where = subprocess.run(
        [python, "-c", "import varkit, varkit.config as c; print(varkit.__file__); print(c.config_dir())"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
    ).stdout.split()
    assert where[0].startswith(str(env_dir)) and where[1].startswith(str(env_dir)), where
    out = subprocess.run(
        [env_dir / "bin" / "varkit", "train", "attention=eager", "--cfg", "job"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout)["attention"]["name"] == "eager"
