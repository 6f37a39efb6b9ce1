"""VAR's image preprocessing with Pillow + numpy (torchvision is not a dependency).

VAR (Tian et al., 2024, §4 / its ``utils/data.py``) resizes the shorter side to ``mid_reso * image_size``
(``mid_reso = 1.125``) with Lanczos, takes a random crop of ``image_size`` for training (a center crop for
evaluation), optionally flips horizontally, and maps pixels to ``[-1, 1]`` — the range its VQVAE expects.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

__all__ = ["ImageTransform", "center_crop", "resize_shorter_side", "to_tensor_pm1"]


def resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
    """Resize so that the shorter side equals ``size``, keeping the aspect ratio (Lanczos)."""
    width, height = image.size
    if min(width, height) == size:
        return image
    if width <= height:
        new_size = (size, max(size, round(height * size / width)))
    else:
        new_size = (max(size, round(width * size / height)), size)
    return image.resize(new_size, Image.Resampling.LANCZOS)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """Crop the central ``size``×``size`` window (offsets rounded like torchvision's ``CenterCrop``)."""
    width, height = image.size
    left = round((width - size) / 2.0)
    top = round((height - size) / 2.0)
    return image.crop((left, top, left + size, top + size))


def to_tensor_pm1(image: Image.Image) -> torch.Tensor:
    """RGB PIL image → float tensor ``(3, H, W)`` in ``[-1, 1]``."""
    # numpy does the arithmetic: small torch element-wise ops pay intra-op threading overhead per call
    array = np.asarray(image.convert("RGB"), dtype=np.uint8).astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


class ImageTransform:
    """Callable ``(PIL image, numpy Generator) -> (3, image_size, image_size)`` tensor in ``[-1, 1]``.

    ``train=True``: resize shorter side to ``round(image_size * mid_reso)``, random crop, optional flip with
    probability 1/2. ``train=False``: same resize, center crop, no flip. Randomness comes only from the generator
    passed per sample, so a stream can be replayed exactly.
    """

    def __init__(self, image_size: int, *, train: bool, mid_reso: float = 1.125, hflip: bool = False) -> None:
        if image_size < 1 or mid_reso < 1.0:
            raise ValueError(f"need image_size >= 1 and mid_reso >= 1, got {image_size} and {mid_reso}")
        self.image_size = image_size
        self.resize_to = round(image_size * mid_reso)
        self.train = train
        self.hflip = hflip and train

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> torch.Tensor:
        image = resize_shorter_side(image.convert("RGB"), self.resize_to)
        if self.train:
            width, height = image.size
            left = int(rng.integers(0, width - self.image_size + 1))
            top = int(rng.integers(0, height - self.image_size + 1))
            image = image.crop((left, top, left + self.image_size, top + self.image_size))
            if self.hflip and rng.random() < 0.5:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        else:
            image = center_crop(image, self.image_size)
        return to_tensor_pm1(image)
