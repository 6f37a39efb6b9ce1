"""Where evaluated images come from: a folder of image files, an ADM ``.npz``, or generation from checkpoints.

Generation follows the VAR paper's protocol (Tian et al. 2024, §5): a fixed number of images per class, class-
conditional sampling with classifier-free guidance, images quantised to ``uint8`` for the evaluator. The wall-clock
time of generation (model loading excluded) is recorded with the settings used, for the table's ``Time`` column.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

if TYPE_CHECKING:
    from varkit.models.var import VAR

__all__ = ["GenerationTiming", "class_labels", "generate_samples", "load_image_folder", "to_uint8_nhwc"]

logger = logging.getLogger(__name__)

FOLDER_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")


def load_image_folder(path: str | Path, *, limit: int | None = None) -> np.ndarray:
    """All images of a folder (sorted by name; PNG/JPEG/WebP) as ``uint8`` ``(n, H, W, 3)``; sizes must agree."""
    files = sorted(p for p in Path(path).iterdir() if p.suffix.lower() in FOLDER_EXTENSIONS)
    if limit is not None:
        files = files[:limit]
    if not files:
        raise FileNotFoundError(f"no image files ({', '.join(FOLDER_EXTENSIONS)}) in {path}")
    arrays = []
    for file in files:
        with Image.open(file) as image:
            arrays.append(np.asarray(image.convert("RGB")))
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"images in {path} differ in size: {sorted(shapes)[:4]}")
    return np.stack(arrays)


def to_uint8_nhwc(images: torch.Tensor) -> np.ndarray:
    """Float images ``(b, 3, H, W)`` in [0, 1] → ``uint8`` ``(b, H, W, 3)`` (rounded to the nearest level)."""
    levels = images.detach().float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    return levels.permute(0, 2, 3, 1).cpu().numpy()


def class_labels(classes: Sequence[int], per_class: int) -> torch.Tensor:
    """Labels ``(len(classes) * per_class,)``: each class repeated ``per_class`` times, classes in order."""
    return torch.tensor([c for c in classes for _ in range(per_class)], dtype=torch.long)


@dataclass
class GenerationTiming:
    """Wall-clock timing of a generation run and the settings it used."""

    num_images: int
    total_seconds: float
    batch_seconds: list[float] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds_per_image(self) -> float:
        return self.total_seconds / max(self.num_images, 1)

    @property
    def images_per_second(self) -> float:
        return self.num_images / self.total_seconds if self.total_seconds > 0 else float("inf")

    def as_dict(self) -> dict[str, Any]:
        return {
            "num_images": self.num_images,
            "total_seconds": self.total_seconds,
            "seconds_per_image": self.seconds_per_image,
            "images_per_second": self.images_per_second,
            "batch_seconds": self.batch_seconds,
            "settings": self.settings,
        }


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def generate_samples(
    var: VAR,
    vqvae: torch.nn.Module,
    labels: torch.Tensor,
    *,
    batch_size: int,
    seed: int,
    sampling: Any = None,
    warmup: bool = True,
) -> tuple[np.ndarray, GenerationTiming]:
    """Generate one image per label with :func:`varkit.models.var.sample_images`; ``uint8`` NHWC plus timing.

    ``sampling``: a :class:`varkit.sampling.SamplingConfig` or a mapping of its fields (``cfg``, ``top_k``, ...,
    ``speedups``); ``None``: the defaults.
    One generator seeded with ``seed`` drives all batches, so a run is reproducible for a given batch size.
    ``warmup``: first generate one untimed, discarded batch (its own generator), so one-off costs (allocator,
    kernel selection, lazy initialisation) do not inflate the time per image.
    """
    from varkit.models.var import sample_images
    from varkit.sampling import SamplingConfig

    spec = SamplingConfig.from_config(sampling)
    device = next(var.parameters()).device
    if warmup and len(labels):
        warm_generator = torch.Generator(device=device).manual_seed(seed + 1)
        sample_images(var, vqvae, labels[:batch_size], sampling=spec, generator=warm_generator)
    generator = torch.Generator(device=device).manual_seed(seed)
    outputs: list[np.ndarray] = []
    batch_seconds: list[float] = []
    _synchronize(device)
    start = time.perf_counter()
    for first in range(0, len(labels), batch_size):
        batch_start = time.perf_counter()
        images = sample_images(var, vqvae, labels[first : first + batch_size], sampling=spec, generator=generator)
        _synchronize(device)
        outputs.append(to_uint8_nhwc(images))
        batch_seconds.append(time.perf_counter() - batch_start)
        logger.info("generated %d / %d images", min(first + batch_size, len(labels)), len(labels))
    total = time.perf_counter() - start
    settings = {
        "batch_size": batch_size,
        "device": str(device),
        "dtype": str(next(var.parameters()).dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "seed": seed,
        "warmup": warmup,
        **spec.as_dict(),
    }
    timing = GenerationTiming(len(labels), total, batch_seconds, settings)
    return np.concatenate(outputs), timing
