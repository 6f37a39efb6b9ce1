"""Zero-shot image editing with a class-conditional VAR (Tian et al., NeurIPS 2024, Sec. 4.4 and Fig. 6).

VAR edits images without any training for it: tokenize the source image into its multi-scale pyramid, then sample
coarse to fine as usual, except that every token *outside* the edit mask is replaced by the source's token of that
scale (teacher-forced), so the transformer conditions all later scales on the kept content and only generates the
masked region. Three tasks follow from the choice of mask and label:

* **in-painting**: mask a region inside the image, label = the null class (or the source's class);
* **out-painting**: mask a border band (:func:`side_mask`), or shrink the source and place it on the canvas
  (:func:`place_on_canvas`): everything around it is generated ("beyond the canvas");
* **class-conditional editing**: mask a region and give a target class; guidance pushes it towards that class.

Masks are *pixel* masks, float in ``[0, 1]`` with **1 = edit** (generate) and 0 = keep, at the model's image
resolution: from a PNG (white = edit, :func:`load_mask`), a box (:func:`box_mask`) or a border band
(:func:`side_mask`). :func:`token_masks` turns one into a boolean map per scale ``(h_k, w_k)``: a token is
*edited* when the edited fraction of the image area it covers passes the ``rule``:

* ``"majority"`` (default): at least half of its area is edited. This is what the reference demo does (it
  bilinearly resizes the keep mask to each scale and keeps tokens above 0.5), here computed as exact area
  fractions so it also holds for non-square and non-divisible schedules;
* ``"any"``: any part is edited (nothing of the masked source leaks into kept tokens; coarse maps are then
  mostly generated);
* ``"all"``: the token lies entirely inside the edit region.

Scales with at most ``keep_small_scales`` tokens (default 3, the reference's rule: the 1x1 map) are always taken
from the source: they carry the global colour and layout the generated region has to agree with.

>>> import torch
>>> from varkit.contracts import Scales
>>> mask = box_mask((16, 16), (0.25, 0.25, 0.75, 0.75))      # x0, y0, x1, y1 as fractions of the image
>>> [m.int().tolist() for m in token_masks(mask, Scales.of([1, 2, 4]), keep_small_scales=0)]
[[[0]], [[0, 0], [0, 0]], [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]]
>>> [m.int().tolist() for m in token_masks(mask, Scales.of([1, 2, 4]), rule="any", keep_small_scales=0)][:2]
[[[1]], [[1, 1], [1, 1]]]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from varkit.contracts import Scales
from varkit.models.generation import EditConstraint

if TYPE_CHECKING:
    from varkit.models.var import VAR, SamplingSpec

__all__ = [
    "SIDES",
    "EditResult",
    "EditRule",
    "box_mask",
    "edit_grid",
    "edit_images",
    "fit_image",
    "load_image",
    "load_mask",
    "mask_preview",
    "place_on_canvas",
    "side_mask",
    "token_masks",
]

logger = logging.getLogger(__name__)

EditRule = Literal["any", "majority", "all"]
SIDES = ("left", "right", "top", "bottom")
Size = int | Sequence[int]


def _pair(size: Size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = (int(v) for v in size)
    return height, width


# -- pixel masks ------------------------------------------------------------------------------------------------
def box_mask(size: Size, box: Sequence[float]) -> Tensor:
    """``(H, W)`` float mask, 1 inside ``box = (x0, y0, x1, y1)`` (x to the right, y down, ``x1``/``y1`` exclusive).

    Coordinates are fractions of the width/height when all four lie in ``[0, 1]``, pixels otherwise (a one-pixel
    box at the origin must therefore be written as pixels of a larger box, which is never a practical edit).
    Fractions round to the nearest pixel edge, as the reference demo does.
    """
    height, width = _pair(size)
    if len(box) != 4:
        raise ValueError(f"a box is (x0, y0, x1, y1), got {list(box)}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if all(0.0 <= v <= 1.0 for v in (x0, y0, x1, y1)):
        x0, x1, y0, y1 = x0 * width, x1 * width, y0 * height, y1 * height
    left, right = max(round(x0), 0), min(round(x1), width)
    top, bottom = max(round(y0), 0), min(round(y1), height)
    if right <= left or bottom <= top:
        raise ValueError(f"the box {list(box)} covers no pixel of a {height}x{width} image (need x0 < x1, y0 < y1)")
    mask = torch.zeros(height, width)
    mask[top:bottom, left:right] = 1.0
    return mask


def side_mask(size: Size, side: str | Sequence[str], margin: float) -> Tensor:
    """``(H, W)`` float mask of a border band for out-painting inside the canvas.

    ``side`` is ``left``, ``right``, ``top``, ``bottom``, ``all`` (all four) or a list of them; ``margin`` is the
    band's width as a fraction of the image side when below 1, in pixels otherwise.
    """
    height, width = _pair(size)
    sides = [side] if isinstance(side, str) else list(side)
    if "all" in sides:
        sides = list(SIDES)
    unknown = [s for s in sides if s not in SIDES]
    if unknown or not sides:
        raise ValueError(f"side must be one of {', '.join((*SIDES, 'all'))} (or a list of them), got {side!r}")
    if margin <= 0:
        raise ValueError(f"the out-painting margin must be positive, got {margin}")

    def band(extent: int) -> int:
        pixels = round(margin * extent) if margin < 1 else round(margin)
        if not 0 < pixels < extent:
            raise ValueError(f"margin {margin} gives a band of {pixels} pixels on a side of {extent}")
        return pixels

    mask = torch.zeros(height, width)
    if "left" in sides:
        mask[:, : band(width)] = 1.0
    if "right" in sides:
        mask[:, width - band(width) :] = 1.0
    if "top" in sides:
        mask[: band(height)] = 1.0
    if "bottom" in sides:
        mask[height - band(height) :] = 1.0
    return mask


def load_mask(path: str | Path, size: Size | None = None, *, fit: str = "stretch") -> Tensor:
    """``(H, W)`` float mask from an image file: white (255) = edit, black = keep, grey = partial.

    Colour images are read as luminance; ``size`` resizes with :func:`fit_image` (area resampling, so the token
    rule still sees the right fractions).
    """
    from PIL import Image

    with Image.open(path) as picture:
        array = np.asarray(picture.convert("L"), dtype=np.float32) / 255.0
    mask = torch.from_numpy(array.copy())
    return mask if size is None else fit_image(mask[None], size, fit=fit, resample="area")[0]


# -- images -----------------------------------------------------------------------------------------------------
def fit_image(image: Tensor, size: Size, *, fit: str = "crop", resample: str = "bilinear") -> Tensor:
    """Resize ``(c, h, w)`` (or ``(n, c, h, w)``) to ``size``: ``crop`` centre-crops to the target aspect ratio
    first, ``stretch`` does not. ``resample``: ``bilinear`` (antialiased, for images) or ``area`` (for masks:
    shrinking averages exactly the covered pixels, so the token rule sees true area fractions)."""
    if fit not in ("crop", "stretch"):
        raise ValueError(f"fit must be 'crop' or 'stretch', got {fit!r}")
    if resample not in ("bilinear", "area"):
        raise ValueError(f"resample must be 'bilinear' or 'area', got {resample!r}")
    height, width = _pair(size)
    batched = image.ndim == 4
    pixels = (image if batched else image[None]).float()
    if fit == "crop":
        source_h, source_w = pixels.shape[-2:]
        # the largest centred window with the target's aspect ratio
        crop_h, crop_w = (
            min(source_h, round(source_w * height / width)),
            min(source_w, round(source_h * width / height)),
        )
        top, left = (source_h - crop_h) // 2, (source_w - crop_w) // 2
        pixels = pixels[..., top : top + crop_h, left : left + crop_w]
    if tuple(pixels.shape[-2:]) != (height, width):
        if resample == "area":
            pixels = F.interpolate(pixels, size=(height, width), mode="area")
        else:
            pixels = F.interpolate(pixels, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    pixels = pixels.clamp(float(image.min()), float(image.max()))  # no bilinear overshoot beyond the input range
    return pixels if batched else pixels[0]


def load_image(path: str | Path, size: Size | None = None, *, fit: str = "crop") -> Tensor:
    """``(3, H, W)`` float RGB image in ``[0, 1]``, optionally fitted to ``size`` (see :func:`fit_image`)."""
    from PIL import Image

    with Image.open(path) as picture:
        array = np.asarray(picture.convert("RGB"), dtype=np.float32) / 255.0
    image = torch.from_numpy(array.copy()).permute(2, 0, 1)
    return image if size is None else fit_image(image, size, fit=fit)


def place_on_canvas(
    image: Tensor,
    canvas_size: Size,
    *,
    size: Size | float | None = None,
    offset: Sequence[int] | None = None,
    mask: Tensor | None = None,
    fill: str | float = "edge",
) -> tuple[Tensor, Tensor]:
    """Out-painting beyond the canvas: put ``image`` ``(3, h, w)`` on a larger canvas; returns ``(canvas, mask)``.

    ``size`` resizes the image first (``(h, w)`` pixels, or a fraction of the canvas, aspect ratio kept);
    ``offset`` is its ``(top, left)`` corner on the canvas (default: centred). The returned edit mask ``(H, W)``
    is 1 everywhere outside the placed image and ``mask`` (resized alike, default 0) inside. The area to be
    generated is pre-filled (``"edge"``: the image's border pixels continued outwards; a number: that grey level)
    only so the tokenizer sees a plausible neighbourhood: its tokens are regenerated anyway.
    """
    canvas_h, canvas_w = _pair(canvas_size)
    if isinstance(size, float):
        scale = min(size * canvas_h / image.shape[-2], size * canvas_w / image.shape[-1])
        size = (max(round(image.shape[-2] * scale), 1), max(round(image.shape[-1] * scale), 1))
    if size is not None:
        image = fit_image(image, size, fit="stretch")
        if mask is not None:
            mask = fit_image(mask[None].float(), size, fit="stretch", resample="area")[0]
    height, width = image.shape[-2:]
    top, left = offset if offset is not None else ((canvas_h - height) // 2, (canvas_w - width) // 2)
    top, left = int(top), int(left)
    if top < 0 or left < 0 or top + height > canvas_h or left + width > canvas_w:
        raise ValueError(
            f"a {height}x{width} image at offset (top={top}, left={left}) does not fit a {canvas_h}x{canvas_w} canvas"
        )
    padding = (left, canvas_w - left - width, top, canvas_h - top - height)
    if fill == "edge":
        canvas = F.pad(image[None].float(), padding, mode="replicate")[0]
    else:
        canvas = F.pad(image.float(), padding, mode="constant", value=float(fill))
    inner = torch.zeros(height, width) if mask is None else mask.float()
    edit = F.pad(inner, padding, mode="constant", value=1.0)
    return canvas, edit


# -- token masks --------------------------------------------------------------------------------------------------
_RULES: dict[str, Any] = {
    "any": lambda fraction: fraction > 0.0,
    "majority": lambda fraction: fraction >= 0.5,
    # area pooling of an all-ones window can land a hair below 1 in floating point
    "all": lambda fraction: fraction >= 1.0 - 1e-6,
}


def token_masks(
    edit_mask: Tensor,
    scales: Scales | Sequence[Any],
    *,
    rule: EditRule = "majority",
    keep_small_scales: int = 3,
) -> list[Tensor]:
    """Per-scale boolean edit maps from a pixel mask ``(H, W)`` or ``(n, H, W)`` (1 = edit); True = generate.

    Returns one ``(h_k, w_k)`` (or ``(n, h_k, w_k)``) tensor per scale. A token's edited fraction is the mean
    of the mask over the image area it covers (adaptive area pooling; exact when the sizes divide), and the
    ``rule`` (module docstring) decides. Scales with at most ``keep_small_scales`` tokens are kept whole.
    """
    if rule not in _RULES:
        raise ValueError(f"rule must be one of {', '.join(_RULES)}, got {rule!r}")
    scales = Scales.of(scales)
    batched = edit_mask.ndim == 3
    if edit_mask.ndim not in (2, 3):
        raise ValueError(f"an edit mask is (H, W) or (n, H, W), got shape {tuple(edit_mask.shape)}")
    # float64 so that exact halves stay exact for the majority rule
    pixels = (edit_mask if batched else edit_mask[None]).to(torch.float64)[:, None]
    decide = _RULES[rule]
    maps = []
    for height, width in scales.sizes:
        edited = decide(F.adaptive_avg_pool2d(pixels, (height, width))[:, 0])
        if height * width <= keep_small_scales:
            edited = torch.zeros_like(edited)
        maps.append(edited if batched else edited[0])
    return maps


# -- editing --------------------------------------------------------------------------------------------------------
@dataclass
class EditResult:
    """What :func:`edit_images` returns (``n`` sources, ``s`` samples each, outputs source-major).

    * ``images``: ``(n*s, 3, H, W)`` edited images in ``[0, 1]``; ``tokens[k]``: their ``(n*s, h_k*w_k)`` tokens;
    * ``source``: ``(n, 3, H, W)`` the images that were tokenized (after any canvas placement), in ``[0, 1]``;
      ``source_tokens[k]``: ``(n, h_k*w_k)``;
    * ``pixel_mask``: ``(n, H, W)`` the pixel edit mask; ``edit_masks[k]``: ``(n, h_k, w_k)`` bool, True where
      scale k was generated (False: the source token was teacher-forced).
    """

    images: Tensor
    tokens: list[Tensor]
    source: Tensor
    source_tokens: list[Tensor]
    pixel_mask: Tensor
    edit_masks: list[Tensor]
    samples: int


def _labels(labels: int | Sequence[int] | Tensor | None, count: int, null_class: int) -> Tensor:
    if labels is None:
        return torch.full((count,), null_class, dtype=torch.long)
    values = torch.as_tensor(labels, dtype=torch.long).flatten()
    if values.numel() == 1:
        values = values.expand(count)
    if values.numel() != count:
        raise ValueError(f"got {values.numel()} labels for {count} source images")
    if bool(((values < 0) | (values > null_class)).any()):
        raise ValueError(f"labels must lie in 0..{null_class} ({null_class} = the null class), got {values.tolist()}")
    return values.clone()


@torch.inference_mode()
def edit_images(
    var: VAR,
    vqvae: nn.Module,
    images: Tensor,
    edit_mask: Tensor,
    labels: int | Sequence[int] | Tensor | None = None,
    *,
    samples: int = 1,
    rule: EditRule = "majority",
    keep_small_scales: int = 3,
    sampling: SamplingSpec | None = None,
    generator: torch.Generator | None = None,
    **options: Any,
) -> EditResult:
    """Zero-shot editing (VAR Sec. 4.4): regenerate the masked region of ``images``, teacher-forcing the rest.

    Args:
        var: the transformer; vqvae: its tokenizer (``tokenize``, ``quantizer``, ``decode_latents``, ``scales``).
        images: ``(n, 3, H, W)`` or ``(3, H, W)`` in ``[0, 1]`` at the tokenizer's image size (see
            :func:`fit_image`, :func:`place_on_canvas`).
        edit_mask: pixel mask ``(H, W)`` (shared) or ``(n, H, W)``, 1 = edit; see :func:`token_masks` for
            ``rule`` and ``keep_small_scales``.
        labels: ``None`` = the null class (unconditional in-/out-painting), a class index for all sources, or one
            per source (class-conditional editing).
        samples: edits drawn per source image.
        sampling: a :class:`varkit.sampling.SamplingConfig` (guidance, filters, speed-ups); without it the
            :meth:`VAR.generate` keyword ``options`` (``cfg``, ``top_k``, ...) apply. generator: the randomness.

    The kept tokens reach the sampler as an :class:`~varkit.models.generation.EditConstraint`.
    """
    if sampling is not None and options:
        raise TypeError(f"give either sampling=<SamplingConfig> or keyword options, not both ({sorted(options)})")
    kwargs = sampling.generate_kwargs() if sampling is not None else dict(options)
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    scales = Scales.of(var.scales)
    if Scales.of(vqvae.scales).sizes != scales.sizes:  # type: ignore[arg-type]
        raise ValueError("the transformer and the tokenizer use different scale schedules")
    sources = images[None] if images.ndim == 3 else images
    image_size = tuple(getattr(vqvae, "image_size", sources.shape[-2:]))
    if sources.ndim != 4 or sources.shape[1] != 3 or tuple(sources.shape[-2:]) != image_size:
        raise ValueError(
            f"images must be (n, 3, {image_size[0]}, {image_size[1]}) in [0, 1] (the tokenizer's image size), got "
            f"{tuple(images.shape)}: resize them with varkit.editing.fit_image"
        )
    count = sources.shape[0]
    pixel_mask = edit_mask.float()
    pixel_mask = pixel_mask[None].expand(count, -1, -1) if pixel_mask.ndim == 2 else pixel_mask
    if tuple(pixel_mask.shape) != (count, *image_size):
        raise ValueError(
            f"the edit mask must be {image_size} or ({count}, *{image_size}), got {tuple(edit_mask.shape)}"
        )

    device = var.device
    sources = sources.float().to(device)
    source_tokens = [t.to(device) for t in vqvae.tokenize(sources * 2.0 - 1.0)]  # type: ignore[operator]
    edited = [m.to(device) for m in token_masks(pixel_mask, scales, rule=rule, keep_small_scales=keep_small_scales)]
    constraint = EditConstraint(
        tokens=[t.repeat_interleave(samples, dim=0) for t in source_tokens],
        masks=[(~m).flatten(1).repeat_interleave(samples, dim=0) for m in edited],
    )

    label_values = _labels(labels, count, int(var.num_classes)).to(device)
    if bool((label_values == var.num_classes).all()):
        kwargs["cfg"] = 0.0  # guidance towards the null class is the null class: skip the unconditional half
    output = var.generate(
        label_values.repeat_interleave(samples),
        vqvae.quantizer,  # type: ignore[arg-type]
        generator=generator,
        constraint=constraint,
        **kwargs,
    )
    decoded = vqvae.decode_latents(output.latent)  # type: ignore[operator]
    logger.debug(
        "edited %d image(s) x %d sample(s); tokens generated per scale: %s",
        count,
        samples,
        [int(m.sum()) for m in edited],
    )
    return EditResult(
        images=decoded.float().clamp(-1.0, 1.0).add(1.0).mul(0.5),
        tokens=output.tokens,
        source=sources,
        source_tokens=source_tokens,
        pixel_mask=pixel_mask.to(device),
        edit_masks=edited,
        samples=samples,
    )


def mask_preview(source: Tensor, edit_mask: Tensor, strength: float = 0.7) -> Tensor:
    """``source`` ``(n, 3, H, W)`` with the edited region (a ``(n, h, w)`` token or pixel mask) washed out white."""
    weight = F.interpolate(edit_mask[:, None].float(), size=source.shape[-2:], mode="nearest")
    return source * (1.0 - strength * weight) + strength * weight


def edit_grid(result: EditResult, *, padding: int = 2) -> np.ndarray:
    """uint8 ``(H', W', 3)`` grid, one row per source: source | mask (the finest scale's generated tokens washed
    out over the source) | the edited samples."""
    from varkit.image_io import make_grid

    preview = mask_preview(result.source, result.edit_masks[-1])
    rows = []
    for index in range(result.source.shape[0]):
        edits = result.images[index * result.samples : (index + 1) * result.samples]
        rows.append(torch.cat((result.source[index : index + 1], preview[index : index + 1], edits)))
    return make_grid(torch.cat(rows).cpu(), columns=2 + result.samples, padding=padding)
