"""``varkit data demo | pack | tokenize`` end to end through the CLI entry point (real VQVAE tokenizer)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from varkit.cli import main
from varkit.data import read_classes
from varkit.data.modules import TokenDataModule, WebDataModule


def test_demo_and_pack_commands(tmp_path, capsys):
    assert main(["data", "demo", str(tmp_path / "demo"), "--train-per-class", "2", "--val-per-class", "1"]) == 0
    out = capsys.readouterr().out
    assert "20 train + 10 val images" in out
    info = json.loads((tmp_path / "demo" / "info.json").read_text())
    assert info["train"]["samples"] == 20

    source = tmp_path / "folder"
    for cls in ("a", "b"):
        (source / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((10, 14, 3), 40 * i, np.uint8)).save(source / cls / f"{i}.jpg")
    (source / "b" / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    code = main(["data", "pack", str(source), str(tmp_path / "packed"), "--resolution", "8", "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "wrote 6 samples in 1 shards" in out and "skipped 1 unreadable files" in out and "bad.jpg" in out
    assert read_classes(tmp_path / "packed") == ["a", "b"]
    assert main(["data", "pack", str(tmp_path / "nowhere"), str(tmp_path / "x")]) == 2


@pytest.mark.slow
def test_tokenize_command_with_a_saved_vqvae(tmp_path, capsys):
    from varkit.checkpoint import save_pretrained
    from varkit.models.vqvae import vqvae_preset

    torch.manual_seed(0)
    vae = vqvae_preset("vqvae_tiny").eval()
    save_pretrained(vae, tmp_path / "vae")
    assert main(["data", "demo", str(tmp_path / "demo"), "--train-per-class", "2", "--val-per-class", "1"]) == 0
    urls = str(tmp_path / "demo" / "val")
    code = main(
        [
            "data",
            "tokenize",
            "--tokenizer",
            str(tmp_path / "vae"),
            "--input",
            urls,
            "--output",
            str(tmp_path / "tokens"),
            "--flip",
            "--batch-size",
            "4",
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr()
    printed = capsys.readouterr().out
    assert "wrote 10 token pyramids (uint16)" in printed

    images = torch.cat([x for x, _ in WebDataModule(None, urls, image_size=16, batch_size=5).val_dataloader()])
    expected = torch.cat(vae.tokenize(images), dim=1)
    tokens = TokenDataModule(None, str(tmp_path / "tokens"), batch_size=5)
    assert tokens.scales == [tuple(s) for s in vae.scales.sizes]
    indices = torch.cat([x for x, _ in tokens.val_dataloader()])
    torch.testing.assert_close(indices, expected, rtol=0, atol=0)
    # the usage report counts the distinct codes of each scale over the tokenized images (not their flips)
    vocabulary = vae.quantizer.codebook_size
    for k, per_scale in enumerate(vae.tokenize(images)):
        used = int(per_scale.unique().numel())
        assert f"scale {k}: {used} / {vocabulary} codes" in printed, printed
