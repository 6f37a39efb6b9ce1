"""The layer contract (docs/architecture.md) is real: import-linter checks it, and it catches a wrong-way import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sysconfig.get_path("scripts")) / "lint-imports"


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """Run ``lint-imports`` on the ``src/varkit`` below ``root`` with that tree's ``pyproject.toml`` contracts."""
    if not LINT_IMPORTS.is_file():
        pytest.fail(f"lint-imports is not installed next to this Python ({LINT_IMPORTS}); install import-linter")
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(root / "pyproject.toml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    """A copy of ``src/varkit`` and ``pyproject.toml`` that a test may edit."""
    shutil.copytree(
        REPO_ROOT / "src" / "varkit",
        tmp_path / "src" / "varkit",
        ignore=shutil.ignore_patterns("__pycache__", "conf"),
    )
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_repository_keeps_its_import_contracts() -> None:
    result = _lint_imports(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout and "0 broken" in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("module", "wrong_import", "contract"),
    [
        # a core model reaching up into the Lightning shell
        ("models/vqvae.py", "from varkit.lit import tokenizer as _upward  # noqa", "Layers"),
        # the quantizers (plain torch) importing the OmegaConf glue
        ("quantizers/msvq.py", "import omegaconf as _omegaconf  # noqa", "Plain-torch core"),
        # a lazy import inside a function is still an import (siblings of one layer stay independent)
        ("checkpoint/generator.py", "def _late():\n    import varkit.editing  # noqa", "Layers"),
    ],
)
def test_a_wrong_way_import_breaks_the_build(package_copy: Path, module: str, wrong_import: str, contract: str) -> None:
    assert _lint_imports(package_copy).returncode == 0, "the unedited copy must pass"
    path = package_copy / "src" / "varkit" / module
    path.write_text(path.read_text() + "\n\n" + wrong_import + "\n")
    result = _lint_imports(package_copy)
    assert result.returncode != 0, result.stdout
    broken = result.stdout.split("Broken contracts")[-1]
    assert contract in broken, result.stdout


def test_import_varkit_stays_light() -> None:
    """``import varkit`` builds models in a notebook; it must not drag in the training or evaluation stack."""
    heavy = ["lightning", "pytorch_lightning", "hydra", "omegaconf", "PIL", "varkit.evaluation.inception", "wandb"]
    code = f"import sys, varkit; print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == [], f"import varkit loaded: {out.stdout.strip()}"
