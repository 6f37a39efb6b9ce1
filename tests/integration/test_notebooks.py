"""``notebooks/quickstart.ipynb`` runs top to bottom (nbclient) on a tiny trained run."""

from __future__ import annotations

from pathlib import Path

import pytest
from var_stage_data import make_tiny_stage, train_overrides

from varkit.cli import main

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"


@pytest.mark.slow
def test_quickstart_notebook_executes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    stage = make_tiny_stage(tmp_path / "stage")
    assert main(["train", *train_overrides(stage, tmp_path, "callbacks.sample_grid.at_end=false")]) == 0
    monkeypatch.setenv("VARKIT_QUICKSTART_DIR", str(tmp_path))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3  # the grid, the coarse-to-fine progression, the guidance comparison
