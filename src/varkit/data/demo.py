"""The built-in demo dataset: procedurally drawn coloured shapes, learnable by tiny CPU models in minutes.

``varkit data demo OUT`` (or :func:`generate_demo`) draws ten classes whose identity is obvious to a person —
each class has its own shape *and* its own colour:

====  ==============  ====  ==============
 0    red circle       5    cyan diamond
 1    green square     6    orange hexagon
 2    blue triangle    7    white ring
 3    yellow star      8    purple pentagon
 4    magenta cross    9    brown crescent
====  ==============  ====  ==============

Every image has a random position, size (the object spans 64–90 % of the image width), rotation and a slight
colour jitter/shading, over a dark, noisy, low-frequency-textured background. Objects are drawn at 4x resolution
and downsampled, so edges are anti-aliased at 32 px. Everything derives from ``numpy.random.default_rng([seed,
split, index])``: the same seed gives byte-identical shards, on any machine, in any order of generation.

Layout written (defaults: 32 px, 400 train + 40 val images per class, seed 0; about 2 s on one core)::

    OUT/train/shard-000000.tar ... shard-000007.tar   KEY.png (lossless) + KEY.cls
    OUT/val/shard-000000.tar ... shard-000003.tar
    OUT/classes.json      class name -> index
    OUT/info.json         counts, image size, seed, shard lists
    OUT/README.md         this description

Shards are numbered so that ``OUT/train/shard-{000000..000007}.tar`` brace patterns work; classes are interleaved
so every shard holds every class. Read them with :class:`varkit.data.WebDataModule` (``conf/data/demo_images.yaml``).
"""

from __future__ import annotations

import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from varkit.data.shards import ShardWriter, write_classes

__all__ = ["DEMO_CLASSES", "DemoClass", "draw_demo_image", "generate_demo"]

logger = logging.getLogger(__name__)

SUPERSAMPLE = 4


@dataclass(frozen=True)
class DemoClass:
    name: str
    shape: str
    colour: tuple[int, int, int]


DEMO_CLASSES: tuple[DemoClass, ...] = (
    DemoClass("red_circle", "circle", (220, 30, 30)),
    DemoClass("green_square", "square", (30, 170, 40)),
    DemoClass("blue_triangle", "triangle", (40, 80, 240)),
    DemoClass("yellow_star", "star", (245, 215, 30)),
    DemoClass("magenta_cross", "cross", (215, 40, 215)),
    DemoClass("cyan_diamond", "diamond", (30, 215, 225)),
    DemoClass("orange_hexagon", "hexagon", (250, 130, 0)),
    DemoClass("white_ring", "ring", (240, 240, 240)),
    DemoClass("purple_pentagon", "pentagon", (130, 50, 185)),
    DemoClass("brown_crescent", "crescent", (150, 85, 30)),
)

SPLIT_CODES = {"train": 0, "val": 1}


def _regular(count: int, phase: float = math.pi / 2) -> list[tuple[float, float]]:
    return [
        (math.cos(phase + 2 * math.pi * i / count), math.sin(phase + 2 * math.pi * i / count)) for i in range(count)
    ]


def _outline(shape: str) -> list[tuple[float, float]]:
    """Unit-radius polygon of ``shape`` (y up), before rotation and scaling."""
    if shape in ("circle", "ring", "crescent"):
        return _regular(64)
    if shape == "square":
        return _regular(4, math.pi / 4)
    if shape == "triangle":
        return _regular(3)
    if shape == "pentagon":
        return _regular(5)
    if shape == "hexagon":
        return _regular(6)
    if shape == "diamond":
        return [(0.0, 1.0), (0.62, 0.0), (0.0, -1.0), (-0.62, 0.0)]
    if shape == "star":
        points = []
        for i in range(10):
            radius = 1.0 if i % 2 == 0 else 0.45
            angle = math.pi / 2 + math.pi * i / 5
            points.append((radius * math.cos(angle), radius * math.sin(angle)))
        return points
    if shape == "cross":
        a, b = 0.32, 0.95  # half arm width, arm length
        return [
            (-a, b),
            (a, b),
            (a, a),
            (b, a),
            (b, -a),
            (a, -a),
            (a, -b),
            (-a, -b),
            (-a, -a),
            (-b, -a),
            (-b, a),
            (-a, a),
        ]
    raise ValueError(f"unknown demo shape {shape!r}")


def _mask(shape: str, size: int, center: tuple[float, float], radius: float, angle: float) -> Image.Image:
    """Anti-aliased coverage mask (mode ``L``) of the shape, drawn at 4x and downsampled."""
    big = size * SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy = center[0] * SUPERSAMPLE, center[1] * SUPERSAMPLE
    r = radius * SUPERSAMPLE
    cos, sin = math.cos(angle), math.sin(angle)

    def place(points: list[tuple[float, float]], scale: float = 1.0, shift: tuple[float, float] = (0.0, 0.0)):
        placed = []
        for x, y in points:
            x, y = x * scale + shift[0], y * scale + shift[1]
            placed.append((cx + r * (x * cos - y * sin), cy - r * (x * sin + y * cos)))
        return placed

    draw.polygon(place(_outline(shape)), fill=255)
    if shape == "ring":
        draw.polygon(place(_outline("circle"), scale=0.55), fill=0)
    elif shape == "crescent":
        draw.polygon(place(_outline("circle"), scale=0.85, shift=(0.45, 0.1)), fill=0)
    return mask.resize((size, size), Image.Resampling.BOX)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Dark tinted base + low-frequency texture + pixel noise, float ``(size, size, 3)``."""
    base = rng.uniform(15, 65, size=3)
    coarse = rng.normal(0.0, 14.0, size=(4, 4, 3))
    texture = (
        np.asarray(
            Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8)).resize(
                (size, size), Image.Resampling.BICUBIC
            ),
            dtype=np.float64,
        )
        - 128
    )
    noise = rng.normal(0.0, 8.0, size=(size, size, 3))
    return base + texture + noise


def draw_demo_image(label: int, rng: np.random.Generator, image_size: int = 32) -> Image.Image:
    """One RGB demo image of class ``label`` drawn from ``rng``."""
    spec = DEMO_CLASSES[label]
    size = image_size
    radius = rng.uniform(0.32, 0.45) * size
    margin = radius * 0.85  # objects may touch the border a little, never leave it
    center = (rng.uniform(margin, size - margin), rng.uniform(margin, size - margin))
    angle = rng.uniform(0.0, 2 * math.pi)
    colour = np.clip(np.asarray(spec.colour, dtype=np.float64) + rng.uniform(-20, 20, size=3), 0, 255)
    shading = 1.0 + rng.normal(0.0, 0.05, size=(size, size, 1))
    alpha = np.asarray(_mask(spec.shape, size, center, radius, angle), dtype=np.float64)[..., None] / 255.0
    pixels = _background(rng, size) * (1 - alpha) + colour * shading * alpha
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="RGB")


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def _write_split(
    out: Path, split: str, per_class: int, num_classes: int, image_size: int, seed: int, shards: int
) -> dict[str, Any]:
    total = per_class * num_classes
    max_count = max(1, math.ceil(total / max(shards, 1)))
    with ShardWriter(out / split, max_count=max_count) as writer:
        for index in range(total):
            label = index % num_classes  # interleaved: every shard holds every class
            rng = np.random.default_rng([seed, SPLIT_CODES[split], index])
            image = draw_demo_image(label, rng, image_size)
            writer.write(f"{index:06d}", {"png": _png_bytes(image), "cls": str(label).encode()})
        paths = [p.name for p in writer.paths]
    return {"samples": total, "shards": len(paths), "pattern": f"{split}/shard-{{000000..{len(paths) - 1:06d}}}.tar"}


def generate_demo(
    out_dir: str | Path,
    *,
    image_size: int = 32,
    train_per_class: int = 400,
    val_per_class: int = 40,
    num_classes: int = 10,
    seed: int = 0,
    train_shards: int = 8,
    val_shards: int = 4,
) -> dict[str, Any]:
    """Write the demo dataset to ``out_dir`` (see the module docstring); returns the ``info.json`` content."""
    if not 16 <= image_size <= 128:
        raise ValueError(f"demo image_size must be within 16..128 (32 to 64 recommended), got {image_size}")
    if not 2 <= num_classes <= len(DEMO_CLASSES):
        raise ValueError(f"num_classes must be within 2..{len(DEMO_CLASSES)}, got {num_classes}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    classes = [c.name for c in DEMO_CLASSES[:num_classes]]
    info: dict[str, Any] = {
        "name": "varkit-demo-shapes",
        "seed": seed,
        "image_size": image_size,
        "num_classes": num_classes,
        "classes": classes,
        "format": "png",
        "train": _write_split(out, "train", train_per_class, num_classes, image_size, seed, train_shards),
        "val": _write_split(out, "val", val_per_class, num_classes, image_size, seed, val_shards),
    }
    write_classes(out, classes)
    (out / "info.json").write_text(json.dumps(info, indent=1) + "\n")
    (out / "README.md").write_text(
        "# varkit demo dataset: coloured shapes\n\n"
        f"{num_classes} classes (shape and colour both identify the class: {', '.join(classes)}), "
        f"{image_size}px PNG, generated by `varkit data demo` with seed {seed}.\n"
        f"train: {info['train']['samples']} images in `{info['train']['pattern']}`; "
        f"val: {info['val']['samples']} images in `{info['val']['pattern']}`.\n"
        "Each sample is `KEY.png` + `KEY.cls` (class index); `classes.json` maps names to indices.\n"
    )
    logger.info("demo dataset: %d train + %d val images in %s", info["train"]["samples"], info["val"]["samples"], out)
    return info
