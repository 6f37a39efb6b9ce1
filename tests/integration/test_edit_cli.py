"""``varkit edit`` on a tiny saved generator: in-painting, out-painting beyond the canvas, PNG masks, user errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from varkit.checkpoint.generator import write_generator
from varkit.checkpoint.io import save_pretrained
from varkit.cli import main
from varkit.models.var import VAR
from varkit.models.vqvae import vqvae_preset

CLASSES = [f"shape{i}" for i in range(10)]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random ``var_tiny`` + ``vqvae_tiny`` generator directory (16px images) and a 24x32 source image."""
    root = tmp_path_factory.mktemp("edit")
    torch.manual_seed(0)
    save_pretrained(vqvae_preset("vqvae_tiny"), root / "tokenizer")
    write_generator(VAR.from_preset("var_tiny"), root / "model", root / "tokenizer", classes=CLASSES)
    pixels = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "source.png")
    return root


def edit(workspace: Path, output: Path, *overrides: str) -> int:
    return main(
        [
            "edit",
            f"model_dir={workspace / 'model'}",
            f"source={workspace / 'source.png'}",
            f"output={output}",
            "seed=0",
            *overrides,
        ]
    )


def read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_inpainting_with_a_box_and_a_class_name(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "inpaint"
    assert (
        edit(
            workspace,
            out,
            "box=[0.25,0.25,0.75,0.75]",
            "label=shape3",
            "samples=3",
            "cfg=2.0",
            "top_k=16",
            "top_p=0.9",
            "upscale=2",
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "(class 3): 3 samples" in printed and "generated tokens per scale: 0/1, 0/4" in printed
    edits = sorted((out / "images").glob("edit_*.png"))
    assert [p.name for p in edits] == ["edit_000.png", "edit_001.png", "edit_002.png"]
    assert all(read(p).shape == (16, 16, 3) for p in edits)
    assert read(out / "grid.png").shape == (2 * (16 + 4), 2 * (5 * 16 + 6 * 2), 3)  # source | mask | 3 edits
    # the source is centre-cropped (24x24 of 24x32) and resized; the box lies in the source's pixel frame
    mask = read(out / "mask.png")[..., 0]
    assert mask[8, 8] == 255 and mask[0, 0] == 0 and mask[8, 1] == 0
    assert read(out / "source.png").shape == (16, 16, 3)


def test_outpainting_beyond_the_canvas_and_png_mask(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "outpaint"
    assert (
        edit(workspace, out, "canvas.source_size=[8,8]", "canvas.offset=[0,8]", "keep_small_scales=0", "samples=2") == 0
    )
    mask = read(out / "mask.png")[..., 0]
    expected = np.full((16, 16), 255, np.uint8)
    expected[0:8, 8:16] = 0
    assert np.array_equal(mask, expected)
    printed = capsys.readouterr().out
    assert "(unconditional)" in printed and "generated tokens per scale: 1/1, 3/4, 8/9, 12/16" in printed
    # a drawn mask (white = edit) at another resolution, resized to the source
    drawn = np.zeros((12, 16), np.uint8)
    drawn[:, 8:] = 255
    Image.fromarray(drawn).save(tmp_path / "mask.png")
    out = tmp_path / "png"
    assert edit(workspace, out, f"mask={tmp_path / 'mask.png'}", "fit=stretch", "samples=1", "rule=any") == 0
    assert np.array_equal(read(out / "mask.png")[..., 0] > 127, np.repeat([[False] * 8 + [True] * 8], 16, axis=0))
    assert "generated tokens per scale: 0/1, 2/4, 6/9, 8/16" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([], "nothing to edit"),
        (["box=[0.2,0.2,0.4,0.4]", "label=giraffe"], "unknown class name 'giraffe'"),
        (["box=[5,5,1,1]"], "covers no pixel"),
        (["side=middle"], "side must be one of"),
        (["box=[0,0,1,1]", "rule=most"], "rule must be any, majority or all"),
    ],
)
def test_bad_input_is_one_message(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], overrides: list[str], message: str
) -> None:
    assert edit(workspace, tmp_path / "bad", *overrides) == 2
    assert message in capsys.readouterr().err
