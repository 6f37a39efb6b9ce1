"""Writing samples: uint8 conversion, PNG files, grids, and the ADM ``.npz`` layout.

Plain numpy + Pillow (imported when a file is written), no Lightning, no Hydra. The ``.npz`` follows OpenAI's ADM
evaluator (used for the paper's FID/IS): one array ``arr_0``, uint8, NHWC.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["make_grid", "save_grid", "save_npz", "save_pngs", "to_uint8"]


def to_uint8(images: Tensor) -> np.ndarray:
    """Images ``(n, 3, H, W)`` float in [0, 1] -> uint8 NHWC numpy array (rounded, clipped)."""
    array = images.detach().float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    return array.permute(0, 2, 3, 1).cpu().numpy()


def make_grid(images: np.ndarray | Tensor, columns: int | None = None, padding: int = 2, fill: int = 255) -> np.ndarray:
    """Tile images (uint8 NHWC, or float NCHW in [0, 1]) into one ``(H', W', 3)`` uint8 grid, row-major."""
    if isinstance(images, Tensor):
        images = to_uint8(images)
    count, height, width, channels = images.shape
    columns = columns or max(1, math.ceil(math.sqrt(count)))
    rows = math.ceil(count / columns)
    grid = np.full(
        (rows * height + (rows + 1) * padding, columns * width + (columns + 1) * padding, channels), fill, np.uint8
    )
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = padding + row * (height + padding), padding + column * (width + padding)
        grid[top : top + height, left : left + width] = images[index]
    return grid


def save_grid(images: np.ndarray | Tensor, path: str | Path, columns: int | None = None, upscale: int = 1) -> Path:
    """Write :func:`make_grid` of ``images`` as a PNG (``upscale`` enlarges small images, nearest neighbour)."""
    from PIL import Image

    grid = make_grid(images, columns)
    picture = Image.fromarray(grid)
    if upscale > 1:
        picture = picture.resize((picture.width * upscale, picture.height * upscale), Image.Resampling.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path


def save_pngs(images: np.ndarray, directory: str | Path, names: Sequence[str]) -> list[Path]:
    """Write each uint8 HWC image as ``directory/<name>.png``."""
    from PIL import Image

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for image, name in zip(images, names):
        path = directory / f"{name}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def save_npz(images: np.ndarray, path: str | Path) -> Path:
    """Write uint8 NHWC images as ``arr_0`` of an ``.npz`` (the ADM evaluator's sample-batch layout)."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"the ADM layout is uint8 (n, H, W, 3), got {images.dtype} {images.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, arr_0=images)
    return path
