"""Loading a trained generator for sampling, and writing samples: PNG files, grids, and the ADM ``.npz`` layout.

Plain PyTorch + Pillow + numpy (no Lightning, no Hydra), so notebooks and scripts can use it directly::

    from varkit.sampling_io import load_generator, save_grid
    var, vqvae, info = load_generator("runs/var-demo/model")

A *generator directory* is either

* ``<run>/model/`` written at the end of ``varkit train``: the transformer (``config.json`` of kind ``var`` +
  ``model.safetensors``, EMA weights when EMA was on) and ``tokenizer.json`` pointing to the tokenizer directory
  (relative paths are relative to the generator directory); optionally ``classes.json``; or
* the output of ``varkit convert`` on an official pair: ``var/`` and ``vqvae/`` sub-directories.

The ``.npz`` follows OpenAI's ADM evaluator (used for the paper's FID/IS): one array ``arr_0``, uint8, NHWC.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "load_generator",
    "make_grid",
    "save_grid",
    "save_npz",
    "save_pngs",
    "to_uint8",
    "write_generator",
]

logger = logging.getLogger(__name__)

TOKENIZER_REFERENCE_FILE = "tokenizer.json"
CLASSES_FILE = "classes.json"


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
        picture = picture.resize((picture.width * upscale, picture.height * upscale), Image.NEAREST)
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


def write_generator(
    model: nn.Module,
    directory: str | Path,
    tokenizer_dir: str | Path,
    *,
    classes: Sequence[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Export a transformer for ``varkit sample``: weights + config, and a reference to its tokenizer."""
    from varkit.checkpoint.io import save_pretrained

    directory = Path(directory)
    save_pretrained(model, directory)
    reference = {"path": str(Path(tokenizer_dir).resolve()), **(extra or {})}
    (directory / TOKENIZER_REFERENCE_FILE).write_text(json.dumps(reference, indent=2) + "\n")
    if classes is not None:
        (directory / CLASSES_FILE).write_text(json.dumps({n: i for i, n in enumerate(classes)}, indent=1) + "\n")
    return directory


def load_generator(
    path: str | Path,
    *,
    tokenizer: str | Path | None = None,
    device: torch.device | str = "cpu",
) -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """Load ``(VAR, VQVAE, info)`` in eval mode from a generator directory (see module docstring).

    ``tokenizer`` overrides the referenced tokenizer directory. ``info`` holds ``classes`` (names, or ``None``)
    and the directories used.
    """
    from varkit.checkpoint.io import CONFIG_FILE, from_pretrained
    from varkit.config import ConfigError
    from varkit.lit.tokenizer_source import load_tokenizer

    root = Path(path).expanduser()
    if (root / CONFIG_FILE).is_file():
        var_dir = root
        if tokenizer is None:
            reference = root / TOKENIZER_REFERENCE_FILE
            if not reference.is_file():
                raise ConfigError(f"{root} has no {TOKENIZER_REFERENCE_FILE}; pass the tokenizer directory")
            target = Path(json.loads(reference.read_text())["path"]).expanduser()
            tokenizer = target if target.is_absolute() else root / target
    elif (root / "var" / CONFIG_FILE).is_file():
        var_dir = root / "var"
        tokenizer = tokenizer if tokenizer is not None else root / "vqvae"
    else:
        raise ConfigError(f"{root} is not a generator directory (no config.json, no var/ sub-directory)")
    var = from_pretrained(var_dir, expect="var", device=device)
    vqvae = load_tokenizer(tokenizer, device=device)
    if tuple(var.scales.sizes) != tuple(vqvae.scales.sizes):  # type: ignore[union-attr]
        raise ConfigError(f"the transformer in {var_dir} and the tokenizer {tokenizer} use different scales")
    classes = None
    for candidate in (root / CLASSES_FILE, var_dir / CLASSES_FILE):
        if candidate.is_file():
            mapping = json.loads(candidate.read_text())
            classes = [name for name, _ in sorted(mapping.items(), key=lambda item: item[1])]
            break
    return var, vqvae, {"classes": classes, "var_dir": str(var_dir), "tokenizer_dir": str(tokenizer)}
