"""Swapping components with one override each runs the quickstart pipeline end to end (issue: swappable parts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_quickstart_with_msfsq_linear_schedule_and_eager_attention(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "varkit", "quickstart", "--output", str(tmp_path / "qs"),
        "--tokenizer-steps", "4", "--steps", "4", "--train-per-class", "8", "--val-per-class", "2",
        "--per-class", "1", "--batch-size", "8",
        "--tokenizer-override", "quantizer=msfsq",
        "--tokenizer-override", "schedule=linear",
        "--tokenizer-override", "schedule.num_scales=5",
        "--tokenizer-override", "schedule.latent_size=8",
        "attention=eager",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = tmp_path / "qs" / "runs"
    tokenizer = json.loads((runs / "tokenizer-demo" / "tokenizer" / "config.json").read_text())["config"]
    model = json.loads((runs / "var-demo" / "model" / "config.json").read_text())["config"]
    assert tokenizer["quantizer"]["name"] == "msfsq" and tokenizer["scales"] == [1, 3, 4, 6, 8]
    # the transformer takes schedule and vocabulary from the tokenizer: 8*8*8*6*5 implicit FSQ codes
    assert model["scales"] == [1, 3, 4, 6, 8] and model["codebook_size"] == 15360
    assert model["attention"]["name"] == "eager"
    assert (runs / "var-demo" / "samples" / "grid.png").is_file()


#: mssimvq also runs with per-scale vocabularies (the demo schedule has 6 scales, 1x1 .. 8x8)
PER_SCALE = [4, 16, 64, 128, 512, 512]


@pytest.mark.parametrize("quantizer", ["msibq", "mssimvq", "msbsq"])
def test_quickstart_with_a_whole_codebook_quantizer(tmp_path: Path, quantizer: str) -> None:
    """Each new quantizer trains end to end with one override; the export carries its codebook health.

    mssimvq runs with per-scale vocabularies (both stages train and sample with them); msbsq's transformer picks
    the bit-wise head from the tokenizer by itself.
    """
    extra = ["--tokenizer-override", f"quantizer.codebook_sizes=[{','.join(map(str, PER_SCALE))}]"]
    command = [
        sys.executable, "-m", "varkit", "quickstart", "--output", str(tmp_path / "qs"),
        "--tokenizer-steps", "3", "--steps", "3", "--train-per-class", "4", "--val-per-class", "2",
        "--per-class", "1", "--batch-size", "8",
        "--tokenizer-override", f"quantizer={quantizer}",
        "--tokenizer-override", "trainer.val_check_interval=3",
        *(extra if quantizer == "mssimvq" else []),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = tmp_path / "qs" / "runs"
    exported = runs / "tokenizer-demo" / "tokenizer"
    assert json.loads((exported / "config.json").read_text())["config"]["quantizer"]["name"] == quantizer
    health = json.loads((exported / "codebook_health.json").read_text())
    scales = json.loads((exported / "config.json").read_text())["config"]["scales"]
    assert len(health["usage"]) == len(scales) and health["step"] == 3
    assert all(0 < u <= 1 for u in health["usage_of_reachable"])
    assert (runs / "var-demo" / "samples" / "grid.png").is_file()
    model = json.loads((runs / "var-demo" / "model" / "config.json").read_text())["config"]
    if quantizer == "msbsq":
        assert model["bits"] == 9 and model["codebook_size"] == 512
    if quantizer == "mssimvq":
        assert health["codes"] == PER_SCALE and model["codebook_sizes"] == PER_SCALE
        tokens = json.loads((tmp_path / "qs" / "data" / "demo_tokens" / "train" / "tokens.json").read_text())
        assert tokens["codebook_sizes"] == PER_SCALE
