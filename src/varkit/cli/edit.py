"""``varkit edit``: zero-shot in-painting, out-painting and class-conditional editing (VAR paper, Sec. 4.4).

Examples::

    varkit edit source=cat.png box=[0.3,0.3,0.7,0.7]                       # in-paint the centre (unconditional)
    varkit edit source=cat.png mask=hole.png samples=8 sampling.top_k=600   # in-paint a drawn mask (white = edit)
    varkit edit source=cat.png side=right margin=0.4                        # out-paint the right 40 %
    varkit edit source=cat.png canvas.source_size=0.5                       # shrink to half, generate all around
    varkit edit source=cat.png box=[64,64,192,192] label=3 sampling.cfg=3   # class-conditional edit of a region

Writes ``<output>/images/edit_<i>.png``, ``<output>/source.png`` (the fitted source, as tokenized),
``<output>/mask.png`` (the pixel edit mask) and ``<output>/grid.png`` (source | mask | edits), then prints where.
Tokens outside the mask are taken from the source's tokenization at every scale; see :mod:`varkit.editing`.
Sampling settings (and speed-ups) come from ``sampling`` (``conf/sampling/``); ``sampling.cfg`` is ignored when
the label is null. Old top-level keys (``cfg=3 top_k=600``) are rewritten to ``sampling.<key>``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from omegaconf import DictConfig

if TYPE_CHECKING:
    from varkit.models.var import VAR

HELP = "zero-shot in-painting / out-painting / class-conditional editing of an image with a trained VAR"
CONFIG_NAME = "edit"

logger = logging.getLogger(__name__)


def resolve_label(label: Any, num_classes: int, names: list[str] | None) -> int | None:
    """``None`` (unconditional), a class index, or a class name from the model's ``classes.json``."""
    from varkit.errors import ConfigError

    if label is None:
        return None
    if isinstance(label, str) and not label.lstrip("-").isdigit():
        if names is None or label not in names:
            known = ", ".join(names) if names else "none (the model has no classes.json; use an index)"
            raise ConfigError(f"unknown class name {label!r}; known names: {known}")
        return names.index(label)
    index = int(label)
    if not 0 <= index < num_classes:
        raise ConfigError(f"label {index} is outside 0..{num_classes - 1} (null: unconditional)")
    return index


def build_edit_inputs(cfg: DictConfig, image_size: tuple[int, int]) -> tuple[Any, Any]:
    """The fitted source ``(3, H, W)`` in [0, 1] and its pixel edit mask ``(H, W)`` from the config."""
    import torch

    from varkit.config import to_plain
    from varkit.editing import box_mask, fit_image, load_image, load_mask, place_on_canvas, side_mask
    from varkit.errors import ConfigError

    if cfg.source is None:
        raise ConfigError("source=<image file> is required: the image to edit")
    source_path = Path(str(cfg.source))
    if not source_path.is_file():
        raise ConfigError(f"source={source_path} does not exist")
    canvas = to_plain(cfg.canvas) or {}
    placing = canvas.get("source_size") is not None
    if cfg.mask is None and cfg.box is None and cfg.side is None and not placing:
        raise ConfigError("nothing to edit: give mask=<png>, box=[x0,y0,x1,y1], side=<left|...> or canvas.source_size")
    try:
        image = load_image(source_path)
        size = tuple(image.shape[-2:])
        mask = torch.zeros(size)
        if cfg.mask is not None:
            mask_path = Path(str(cfg.mask))
            if not mask_path.is_file():
                raise ConfigError(f"mask={mask_path} does not exist")
            mask = torch.maximum(mask, load_mask(mask_path, size, fit="stretch"))
        if cfg.box is not None:
            mask = torch.maximum(mask, box_mask(size, list(to_plain(cfg.box))))
        if cfg.side is not None:
            mask = torch.maximum(mask, side_mask(size, to_plain(cfg.side), float(cfg.margin)))
        if placing:
            source_size = canvas["source_size"]
            fill = canvas.get("fill", "edge")
            return place_on_canvas(
                image,
                image_size,
                size=float(source_size) if isinstance(source_size, (int, float)) else list(source_size),
                offset=canvas.get("offset"),
                mask=mask,
                fill=fill if fill == "edge" else float(fill),
            )
        return fit_image(image, image_size, fit=str(cfg.fit)), fit_image(
            mask[None], image_size, fit=str(cfg.fit), resample="area"
        )[0]
    except ValueError as err:  # a bad box/side/offset: the user's input, one message
        raise ConfigError(str(err)) from None


def run(cfg: DictConfig) -> None:
    import time

    import torch
    from PIL import Image

    from varkit.checkpoint.generator import load_generator
    from varkit.cli.sample import resolve_dtype, sampling_config
    from varkit.config import to_plain
    from varkit.editing import edit_grid, edit_images
    from varkit.errors import ConfigError
    from varkit.hardware import resolve_device
    from varkit.image_io import save_pngs, to_uint8

    if cfg.rule not in ("any", "majority", "all"):
        raise ConfigError(f"rule must be any, majority or all, got {cfg.rule!r}")
    sampling = sampling_config(cfg)
    device = resolve_device(str(cfg.device))
    dtype = resolve_dtype(str(cfg.precision), device)
    model_dir = Path(str(cfg.model_dir))
    if not model_dir.exists():
        raise ConfigError(f"model_dir={model_dir} does not exist: train one (varkit train / varkit quickstart) first")
    loaded, tokenizer, info = load_generator(model_dir, tokenizer=cfg.tokenizer_dir, device=device)
    var = cast("VAR", loaded)
    vqvae: Any = tokenizer
    if dtype != var.dtype:
        var.to(dtype)
    vqvae.decoder_to(dtype)  # channels-last decoder; the encoder stays in float32: tokenizing must be exact
    image_size = tuple(vqvae.image_size)
    source, mask = build_edit_inputs(cfg, image_size)
    label = resolve_label(to_plain(cfg.label), int(var.num_classes), info["classes"])
    generator = torch.Generator(device=var.device).manual_seed(int(cfg.seed))
    started = time.perf_counter()
    result = edit_images(
        var,
        vqvae,
        source,
        mask,
        label,
        samples=int(cfg.samples),
        rule=str(cfg.rule),  # type: ignore[arg-type]
        keep_small_scales=int(cfg.keep_small_scales),
        sampling=sampling,
        generator=generator,
    )
    elapsed = time.perf_counter() - started
    output = Path(str(cfg.output)).resolve()
    output.mkdir(parents=True, exist_ok=True)
    files = save_pngs(to_uint8(result.images), output / "images", [f"edit_{i:03d}" for i in range(len(result.images))])
    save_pngs(to_uint8(result.source), output, ["source"])
    save_pngs(to_uint8(result.pixel_mask[:1, None].expand(-1, 3, -1, -1)), output, ["mask"])
    grid = output / "grid.png"
    picture = Image.fromarray(edit_grid(result))
    zoom = int(cfg.upscale)
    if zoom > 1:
        picture = picture.resize((picture.width * zoom, picture.height * zoom), Image.Resampling.NEAREST)
    picture.save(grid)
    generated = [int(m.sum()) for m in result.edit_masks]
    total = [h * w for h, w in var.scales.sizes]
    kind = "unconditional" if label is None else f"class {label}"
    sys.stdout.write(f"edited {cfg.source} ({kind}): {len(files)} samples in {elapsed:.1f} s on {device}\n")
    sys.stdout.write(f"  generated tokens per scale: {', '.join(f'{g}/{t}' for g, t in zip(generated, total))}\n")
    sys.stdout.write(f"  {len(files)} PNGs in {output / 'images'}\n  grid (source | mask | edits) {grid}\n")
