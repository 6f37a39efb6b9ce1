"""Real images read straight from webdataset tar shards with ADM's reference preprocessing.

Used for reference statistics (:mod:`varkit.evaluation.stats`) and to fit the ``tiny`` extractor's head. Reference
images are preprocessed as ADM's reference batches were: repeated 2x box downsampling while the shorter side is at
least twice the target, a bicubic resize of the shorter side to the target, then a centre crop.
"""

from __future__ import annotations

import io
import logging
import os
import tarfile
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from PIL import Image

__all__ = ["IMAGE_EXTENSIONS", "adm_center_crop", "image_batches", "iter_shard_images", "iter_shard_samples"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


def adm_center_crop(image: Image.Image, size: int) -> np.ndarray:
    """ADM's reference preprocessing: box-halve while large, bicubic resize of the shorter side, centre crop.

    Returns ``uint8`` ``(size, size, 3)``.
    """
    image = image.convert("RGB")
    # box filtering in halving steps first: a single bicubic resize over a large factor aliases
    while min(image.size) >= 2 * size:
        image = image.resize((image.size[0] // 2, image.size[1] // 2), resample=Image.Resampling.BOX)
    scale = size / min(image.size)
    target = (round(image.size[0] * scale), round(image.size[1] * scale))
    image = image.resize(target, resample=Image.Resampling.BICUBIC)
    array = np.asarray(image)
    top = (array.shape[0] - size) // 2
    left = (array.shape[1] - size) // 2
    return np.ascontiguousarray(array[top : top + size, left : left + size])


def iter_shard_samples(
    urls: Iterable[str], image_size: int, *, limit: int | None = None
) -> Iterator[tuple[np.ndarray, int | None]]:
    """``(uint8 (image_size, image_size, 3) image, class or None)`` from webdataset tar shards, in shard order.

    Members are grouped into samples by the name up to the first dot (``KEY.png`` + ``KEY.cls``). Samples without
    an image are skipped (counted in a log line); an unreadable image is an error, because silently dropping
    reference images would bias the statistics.
    """
    count = skipped = 0

    def finish(sample: dict[str, bytes]) -> tuple[np.ndarray, int | None] | None:
        nonlocal skipped
        payload = next((sample[ext] for ext in IMAGE_EXTENSIONS if ext in sample), None)
        if payload is None:
            skipped += 1
            return None
        label = int(sample["cls"].decode("ascii").strip()) if "cls" in sample else None
        with Image.open(io.BytesIO(payload)) as image:
            return adm_center_crop(image, image_size), label

    for url in urls:
        key: str | None = None
        sample: dict[str, bytes] = {}
        with tarfile.open(url, mode="r") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                name = os.path.basename(member.name)
                stem, _, extension = name.partition(".")
                if stem != key and sample:
                    done = finish(sample)
                    if done is not None:
                        yield done
                        count += 1
                        if limit is not None and count >= limit:
                            return
                    sample = {}
                key = stem
                extension = extension.lower()
                if extension in (*IMAGE_EXTENSIONS, "cls"):
                    handle = archive.extractfile(member)
                    assert handle is not None
                    sample[extension] = handle.read()
                else:
                    sample[extension] = b""  # not read; recorded so an image-less sample is counted as skipped
        if sample:
            done = finish(sample)
            if done is not None:
                yield done
                count += 1
                if limit is not None and count >= limit:
                    return
    if skipped:
        logger.info("skipped %d samples without an image while reading shards", skipped)


def iter_shard_images(urls: Iterable[str], image_size: int, *, limit: int | None = None) -> Iterator[np.ndarray]:
    """The images of :func:`iter_shard_samples`, without labels."""
    for image, _ in iter_shard_samples(urls, image_size, limit=limit):
        yield image


def image_batches(images: Iterable[np.ndarray], batch_size: int) -> Iterator[torch.Tensor]:
    """Group ``(H, W, 3)`` ``uint8`` arrays into ``(b, 3, H, W)`` ``uint8`` tensors."""
    batch: list[np.ndarray] = []
    for image in images:
        batch.append(image)
        if len(batch) == batch_size:
            yield torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).contiguous()
            batch = []
    if batch:
        yield torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).contiguous()
