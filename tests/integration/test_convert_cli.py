"""``varkit convert`` on the official-format parity fixture: the converted directories reproduce the reference."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from varkit.checkpoint import from_pretrained

FIXTURE = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "var_parity_a.pt"


def varkit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "varkit", *args], capture_output=True, text=True, timeout=300)


def test_convert_cli_round_trip(parity_fixture: dict, tmp_path: Path) -> None:
    out = varkit("convert", str(FIXTURE), str(tmp_path / "converted"))
    assert out.returncode == 0, out.stderr
    assert "wrote var:" in out.stdout and "wrote vqvae:" in out.stdout
    var = from_pretrained(tmp_path / "converted" / "var", expect="var", dtype=torch.float32)
    vqvae = from_pretrained(tmp_path / "converted" / "vqvae", expect="vqvae", dtype=torch.float32)
    expected, inputs = parity_fixture["expected"], parity_fixture["inputs"]
    with torch.no_grad():
        indices = vqvae.tokenize(inputs["images"].float())
        logits = var(inputs["labels"], expected["teacher_forcing_input"].float())
    for got, want in zip(indices, expected["indices_per_scale"], strict=True):
        assert torch.equal(got, want)
    torch.testing.assert_close(logits, expected["logits"].float(), atol=1e-4, rtol=0)


def test_convert_refuses_bad_input_clearly(tmp_path: Path) -> None:
    missing = varkit("convert", str(tmp_path / "nope.pth"), str(tmp_path / "out"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    bogus = tmp_path / "bogus.pth"
    torch.save({"blocks.0.unknown.weight": torch.zeros(2)}, bogus)
    bad = varkit("convert", str(bogus), str(tmp_path / "out"))
    assert bad.returncode == 2 and "cannot convert" in bad.stderr and "Traceback" not in bad.stderr
