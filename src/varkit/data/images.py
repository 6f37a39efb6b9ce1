"""Image stage data: webdataset shards of ``KEY.{jpg,png,webp}`` + ``KEY.cls`` → ``(images, labels)`` batches.

Images are decoded with Pillow and preprocessed as in VAR (Tian et al., 2024; see
:mod:`varkit.data.transforms`): batches are ``(images float (b, 3, H, W) in [-1, 1], labels int64 (b,))``.
Streaming, worker/rank splitting, resampling and restorable position come from :mod:`varkit.data.streaming`.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from PIL import Image

from varkit.data.streaming import SkipSample
from varkit.data.transforms import ImageTransform

__all__ = ["IMAGE_EXTENSIONS", "ImageSampleDecoder", "decode_image", "decode_label"]

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


def decode_label(sample: dict[str, Any]) -> int:
    """The integer class of a sample (``KEY.cls`` holds it as ASCII digits)."""
    if "cls" not in sample:
        raise SkipSample("missing_keys", "sample has no .cls entry")
    return int(sample["cls"].decode("ascii").strip())


def decode_image(sample: dict[str, Any]) -> Image.Image:
    """The RGB image of a sample, fully decoded (so a corrupt file fails here, not later)."""
    ext = next((e for e in IMAGE_EXTENSIONS if e in sample), None)
    if ext is None:
        raise SkipSample("missing_keys", "sample has no image entry")
    with Image.open(io.BytesIO(sample[ext])) as image:
        image.load()
        return image.convert("RGB")


class ImageSampleDecoder:
    """``(sample, rng) -> (image tensor, label)`` applying an :class:`ImageTransform` (picklable for workers)."""

    def __init__(self, transform: ImageTransform) -> None:
        self.transform = transform

    def __call__(self, sample: dict[str, Any], rng: np.random.Generator) -> tuple[torch.Tensor, int]:
        label = decode_label(sample)
        return self.transform(decode_image(sample), rng), label
