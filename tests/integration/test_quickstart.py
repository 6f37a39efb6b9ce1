"""`varkit quickstart`, heavily shortened (a few steps per stage): every stage runs and the outputs exist.

The full-length quickstart (about 10 minutes on 2 CPU cores) is run by hand; see the README.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image


@pytest.mark.slow
def test_shortened_quickstart_writes_every_stage(tmp_path: Path) -> None:
    out = tmp_path / "qs"
    command = [
        sys.executable, "-m", "varkit", "quickstart", "--output", str(out),
        "--tokenizer-steps", "2", "--steps", "2", "--train-per-class", "4", "--val-per-class", "1",
        "--batch-size", "4", "--tokenizer-batch-size", "4", "--per-class", "2", "--trainer", "debug",
        "callbacks.sample_grid.at_end=false",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    grid = out / "runs" / "var-demo" / "samples" / "grid.png"
    assert f"sample grid (one row per class): {grid}" in result.stdout
    assert (out / "data" / "demo" / "classes.json").is_file()
    assert (out / "runs" / "tokenizer-demo" / "tokenizer" / "model.safetensors").is_file()
    assert json.loads((out / "data" / "demo_tokens" / "train" / "tokens.json").read_text())["flip"] is True
    assert (out / "runs" / "var-demo" / "model" / "tokenizer.json").is_file()
    width, height = Image.open(grid).size
    assert height > width  # 10 rows (classes) of 2 samples
    assert len(list((out / "runs" / "var-demo" / "samples" / "images").glob("*.png"))) == 20

    again = subprocess.run(command, capture_output=True, text=True, timeout=600)  # finished stages are skipped
    assert again.returncode == 0 and again.stdout.count("already done") == 5
