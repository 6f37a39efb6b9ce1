"""``notebooks/zero_shot_editing.ipynb`` runs top to bottom (nbclient) on a random demo model (no trained run)."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "zero_shot_editing.ipynb"


@pytest.mark.slow
def test_zero_shot_editing_notebook_executes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.delenv("VARKIT_DEMO_RUN", raising=False)  # the notebook builds its own random demo model
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 4  # in-painting, side out-painting, beyond the canvas, class-conditional
    text = "".join(o.get("text", "") for o in outputs)
    assert "random generator" in text and "8x8: " in text
