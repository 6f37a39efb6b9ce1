"""Zero-shot editing (VAR Sec. 4.4): mask builders, per-scale token masks, and teacher-forced generation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from varkit.contracts import Scales
from varkit.editing import (
    EditResult,
    box_mask,
    edit_grid,
    edit_images,
    fit_image,
    load_image,
    load_mask,
    place_on_canvas,
    side_mask,
    token_masks,
)
from varkit.models.var import VAR
from varkit.models.vqvae import VQVAE_PRESETS, build_vqvae

TOKENIZER = VQVAE_PRESETS["vqvae_tiny"]["tokenizer"]  # 4x downsampling, 8 latent channels, 64 codes

#: name -> (quantizer spec, image size, scales)
SETUPS = {
    "msvq": ({"name": "msvq"}, 16, [1, 2, 3, 4]),
    "msfsq": ({"name": "msfsq", "levels": [4, 4, 4]}, 16, [1, 2, 3, 4]),
    "msvq-non-square": ({"name": "msvq"}, [12, 16], [(1, 1), (2, 3), (3, 4)]),
}


def build_pair(setup: str) -> tuple[VAR, torch.nn.Module]:
    quantizer, image_size, scales = SETUPS[setup]
    torch.manual_seed(0)
    vqvae = build_vqvae({**TOKENIZER, "image_size": image_size}, quantizer, scales).eval()
    var = VAR.from_preset(
        "var_tiny", scales=scales, codebook_size=vqvae.quantizer.codebook_size, code_dim=vqvae.quantizer.code_dim
    ).eval()
    return var, vqvae


@pytest.fixture(scope="module", params=list(SETUPS))
def pair(request: pytest.FixtureRequest) -> tuple[VAR, torch.nn.Module]:
    return build_pair(request.param)


def random_sources(vqvae: torch.nn.Module, count: int = 2) -> torch.Tensor:
    return torch.rand(count, 3, *vqvae.image_size, generator=torch.Generator().manual_seed(1))


def block_fractions(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Reference: the mean of ``mask`` over each token's pixel block (sizes divide)."""
    h, w = size
    return mask.reshape(h, mask.shape[0] // h, w, mask.shape[1] // w).mean(axis=(1, 3))


# -- mask builders ------------------------------------------------------------------------------------------------
def test_box_mask_pixels_and_fractions() -> None:
    expected = np.zeros((8, 12), np.float32)
    expected[2:6, 3:9] = 1  # rows y0:y1, columns x0:x1
    assert np.array_equal(box_mask((8, 12), (3, 2, 9, 6)).numpy(), expected)
    assert np.array_equal(box_mask((8, 12), (0.25, 0.25, 0.75, 0.75)).numpy(), expected)
    assert box_mask(8, (0, 0, 100, 100)).sum() == 64  # clipped to the image
    with pytest.raises(ValueError, match="covers no pixel"):
        box_mask(8, (5, 5, 1, 1))
    with pytest.raises(ValueError, match="x0, y0, x1, y1"):
        box_mask(8, (1, 2, 3))


def test_side_mask_bands() -> None:
    left = np.zeros((8, 16), np.float32)
    left[:, :4] = 1
    assert np.array_equal(side_mask((8, 16), "left", 0.25).numpy(), left)
    bottom = np.zeros((8, 16), np.float32)
    bottom[-3:] = 1
    assert np.array_equal(side_mask((8, 16), "bottom", 3).numpy(), bottom)
    frame = np.ones((8, 8), np.float32)
    frame[2:6, 2:6] = 0
    assert np.array_equal(side_mask(8, "all", 2).numpy(), frame)
    assert np.array_equal(
        side_mask(8, ["top", "right"], 0.5).numpy(),
        np.maximum(side_mask(8, "top", 4).numpy(), side_mask(8, "right", 4).numpy()),
    )
    with pytest.raises(ValueError, match="side must be one of"):
        side_mask(8, "middle", 0.25)
    with pytest.raises(ValueError, match="band of 8 pixels"):
        side_mask(8, "left", 8)


def test_png_mask_white_is_edit(tmp_path: Path) -> None:
    pixels = np.zeros((16, 16), np.uint8)
    pixels[4:12, 8:16] = 255
    Image.fromarray(pixels).convert("RGB").save(tmp_path / "mask.png")
    mask = load_mask(tmp_path / "mask.png")
    assert np.array_equal(mask.numpy(), pixels / 255.0)
    maps = token_masks(mask, Scales.of([1, 2, 4]), keep_small_scales=0)
    assert maps[1].tolist() == [[False, True], [False, True]]  # half of each right token: majority
    assert maps[2].int().tolist() == [[0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0]]
    assert load_mask(tmp_path / "mask.png", 8).shape == (8, 8)


@pytest.mark.parametrize(
    ("rule", "decide"), [("any", lambda f: f > 0), ("majority", lambda f: f >= 0.5), ("all", lambda f: f >= 1)]
)
def test_token_masks_follow_the_area_rule(rule: str, decide) -> None:
    rng = np.random.default_rng(0)
    mask = (rng.random((16, 16)) < 0.3).astype(np.float32)
    mask[:8, :8] = 1.0  # one fully edited quadrant, so the "all" rule has something to find
    scales = Scales.of([1, 2, 4, 8, 16])
    maps = token_masks(torch.from_numpy(mask), scales, rule=rule, keep_small_scales=0)
    for got, size in zip(maps, scales.sizes):
        assert np.array_equal(got.numpy(), decide(block_fractions(mask, size))), (rule, size)
    batched = token_masks(torch.from_numpy(np.stack([mask, 1 - mask])), scales, rule=rule, keep_small_scales=0)
    assert all(torch.equal(b[0], m) for b, m in zip(batched, maps))


def test_small_scales_are_kept_whole_and_non_square_schedules_work() -> None:
    mask = torch.zeros(12, 16)
    mask[:, :8] = 1.0  # the left half of a 12x16 image
    scales = Scales.of([(1, 1), (1, 3), (2, 3), (3, 4)])
    maps = token_masks(mask, scales)
    assert not maps[0].any() and not maps[1].any()  # 1 and 3 tokens <= keep_small_scales=3
    assert maps[3].int().tolist() == [[1, 1, 0, 0]] * 3
    assert maps[2].int().tolist() == [[1, 1, 0]] * 2  # the middle column is half edited: majority
    assert token_masks(mask, scales, rule="all")[2].int().tolist() == [[1, 0, 0]] * 2
    assert token_masks(mask, scales, keep_small_scales=0)[1].int().tolist() == [[1, 1, 0]]


def test_fit_image_crops_the_centre_and_load_image_round_trips(tmp_path: Path) -> None:
    image = torch.arange(32, dtype=torch.float32).reshape(1, 4, 8) / 31
    assert torch.equal(fit_image(image, 4), image[..., 2:6])  # crop only, no resize
    assert fit_image(image, (4, 8), fit="stretch").shape == (1, 4, 8)
    assert fit_image(torch.rand(3, 10, 20), (8, 8)).shape == (3, 8, 8)
    pixels = np.random.default_rng(0).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "image.png")
    loaded = load_image(tmp_path / "image.png")
    assert torch.allclose(loaded, torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)


def test_place_on_canvas_puts_the_source_at_the_offset() -> None:
    image = torch.rand(3, 8, 8)
    canvas, mask = place_on_canvas(image, 16, offset=(4, 0))
    assert torch.equal(canvas[:, 4:12, 0:8], image)
    assert torch.equal(canvas[:, 0, 0], image[:, 0, 0]) and torch.equal(canvas[:, 15, 15], image[:, -1, -1])  # edge
    expected = torch.ones(16, 16)
    expected[4:12, 0:8] = 0
    assert torch.equal(mask, expected)
    inner = torch.zeros(8, 8)
    inner[:2] = 1
    canvas, mask = place_on_canvas(
        torch.rand(3, 16, 16), (16, 16), size=0.5, mask=box_mask(16, (0, 0, 16, 4)), fill=0.5
    )
    assert canvas.shape == (3, 16, 16) and torch.equal(canvas[:, 0, 0], torch.full((3,), 0.5))
    assert torch.equal(mask[4:12, 4:12], inner) and mask.sum() == 256 - 64 + 16
    with pytest.raises(ValueError, match="does not fit"):
        place_on_canvas(image, 16, offset=(10, 0))


# -- editing ------------------------------------------------------------------------------------------------------
def test_unmasked_tokens_are_preserved_and_masked_ones_generated(pair) -> None:
    var, vqvae = pair
    sources = random_sources(vqvae)
    height, width = vqvae.image_size
    mask = box_mask((height, width), (0.5, 0.0, 1.0, 1.0))  # the right half
    result = edit_images(
        var,
        vqvae,
        sources,
        mask,
        [3, 7],
        samples=3,
        keep_small_scales=0,
        cfg=2.0,
        top_k=0,
        generator=torch.Generator().manual_seed(0),
    )
    assert result.images.shape == (6, 3, height, width) and 0 <= result.images.min() <= result.images.max() <= 1
    expected_source = vqvae.tokenize(sources * 2 - 1)
    for k, (edit, tokens, source) in enumerate(zip(result.edit_masks, result.tokens, expected_source)):
        assert torch.equal(result.source_tokens[k], source)
        keep = ~edit.flatten(1).repeat_interleave(3, dim=0)
        repeated = source.repeat_interleave(3, dim=0)
        assert torch.equal(tokens[keep], repeated[keep]), f"scale {k}: a kept token was not the source's"
    finest = result.edit_masks[-1].flatten(1).repeat_interleave(3, dim=0)
    assert 0 < finest.sum() < finest.numel()
    assert (result.tokens[-1][finest] != expected_source[-1].repeat_interleave(3, dim=0)[finest]).any()
    assert not torch.equal(result.tokens[-1][0], result.tokens[-1][1])  # samples differ from one another


def test_empty_mask_gives_back_the_source(pair) -> None:
    check_empty_mask(*pair, smooth=False)


def test_empty_mask_gives_back_the_source_in_smooth_mode() -> None:
    check_empty_mask(*build_pair("msvq"), smooth=True)


def check_empty_mask(var: VAR, vqvae: torch.nn.Module, smooth: bool) -> None:
    sources = random_sources(vqvae)
    result = edit_images(
        var,
        vqvae,
        sources,
        torch.zeros(*vqvae.image_size),
        1,
        samples=2,
        smooth=smooth,
        generator=torch.Generator().manual_seed(0),
    )
    source_tokens = vqvae.tokenize(sources * 2 - 1)
    for tokens, source in zip(result.tokens, source_tokens):
        assert torch.equal(tokens, source.repeat_interleave(2, dim=0))
    reconstruction = vqvae.decode_indices(source_tokens).clamp(-1, 1).add(1).div(2)
    torch.testing.assert_close(result.images, reconstruction.repeat_interleave(2, dim=0), atol=1e-5, rtol=0)


def test_same_generator_same_edit_and_per_source_masks() -> None:
    var, vqvae = build_pair("msvq")
    sources = random_sources(vqvae)
    masks = torch.stack((box_mask(16, (0, 0, 8, 16)), torch.zeros(16, 16)))  # edit only the first source
    runs = [
        edit_images(
            var,
            vqvae,
            sources,
            masks,
            [1, 2],
            samples=2,
            top_k=8,
            top_p=0.9,
            temperature=1.5,
            generator=torch.Generator().manual_seed(5),
        )
        for _ in range(2)
    ]
    assert all(torch.equal(a, b) for a, b in zip(runs[0].tokens, runs[1].tokens))
    untouched = vqvae.tokenize(sources[1:] * 2 - 1)
    assert all(torch.equal(t[2:], s.expand(2, -1)) for t, s in zip(runs[0].tokens, untouched))
    assert not torch.equal(runs[0].tokens[-1][:2], vqvae.tokenize(sources[:1] * 2 - 1)[-1].expand(2, -1))


def test_outpainting_beyond_the_canvas_keeps_the_source_region() -> None:
    var, vqvae = build_pair("msvq")
    small = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(2))
    canvas, mask = place_on_canvas(small, 16, offset=(0, 8))  # the top-right quarter is the source
    result = edit_images(
        var, vqvae, canvas, mask, samples=4, keep_small_scales=0, generator=torch.Generator().manual_seed(0)
    )
    finest = result.tokens[-1].reshape(4, 4, 4)
    source = vqvae.tokenize(canvas[None] * 2 - 1)[-1].reshape(1, 4, 4)
    assert result.edit_masks[-1][0].int().tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]
    assert torch.equal(finest[:, :2, 2:], source[:, :2, 2:].expand(4, -1, -1))
    assert (finest[:, 2:] != source[:, 2:]).any()


def test_edit_grid_and_bad_inputs() -> None:
    var, vqvae = build_pair("msvq")
    result = edit_images(
        var,
        vqvae,
        random_sources(vqvae, 1)[0],
        box_mask(16, (0, 0, 8, 8)),
        samples=3,
        generator=torch.Generator().manual_seed(0),
    )
    assert isinstance(result, EditResult)
    grid = edit_grid(result, padding=2)
    assert grid.shape == (16 + 4, 5 * 16 + 6 * 2, 3) and grid.dtype == np.uint8
    with pytest.raises(ValueError, match="fit_image"):
        edit_images(var, vqvae, torch.rand(1, 3, 8, 8), torch.zeros(8, 8))
    with pytest.raises(ValueError, match="labels must lie"):
        edit_images(var, vqvae, torch.rand(1, 3, 16, 16), torch.zeros(16, 16), 99)
    with pytest.raises(ValueError, match="rule must be"):
        edit_images(var, vqvae, torch.rand(1, 3, 16, 16), torch.zeros(16, 16), rule="most")  # type: ignore[arg-type]
