"""Reference statistics for FID/KID/precision-recall: from image shards (cached on disk) or an ADM ``.npz``.

FID compares generated samples with the Gaussian statistics of real images' features (VAR paper, Tian et al. 2024,
§5 uses the ImageNet training set through ADM's reference batches). Computing them from shards is slow, so the
result is cached under a key built from the shard files (path, size, modification time), the extractor's
fingerprint and the preprocessing; a changed shard or extractor gives a new key, never a stale hit.

Reference images are preprocessed as ADM's reference batches were: repeated 2× box downsampling while the shorter
side is at least twice the target, a bicubic resize of the shorter side to the target, then a centre crop.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from varkit.evaluation.features import FeatureExtractor, extract_features
from varkit.evaluation.metrics import gaussian_statistics
from varkit.evaluation.npz import load_reference_npz, save_reference_npz

__all__ = [
    "IMAGE_EXTENSIONS",
    "ReferenceStatistics",
    "adm_center_crop",
    "image_batches",
    "iter_shard_images",
    "iter_shard_samples",
    "reference_from_features",
    "reference_from_npz",
    "reference_from_shards",
    "shards_cache_key",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


@dataclass
class ReferenceStatistics:
    """Real-image statistics for one feature extractor.

    ``mu``/``sigma``: Gaussian statistics of the pool features (FID). ``features``: the pool features themselves
    when available (KID and precision/recall need them). ``extractor``: fingerprint of the extractor, or ``None``
    for ADM files (computed with TensorFlow's Inception graph). ``source``: where they came from.
    """

    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray | None
    extractor: str | None
    num_images: int
    source: str


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


def reference_from_features(features: np.ndarray, *, extractor: str | None, source: str) -> ReferenceStatistics:
    """Statistics of already extracted pool features."""
    mu, sigma = gaussian_statistics(features)
    return ReferenceStatistics(mu, sigma, np.asarray(features), extractor, int(features.shape[0]), source)


def shards_cache_key(urls: Iterable[str], extractor: str, *, image_size: int, max_images: int | None) -> str:
    """Cache key of reference statistics: shard identities (path, size, mtime), extractor fingerprint, settings."""
    shards = []
    for url in urls:
        stat = os.stat(url)
        shards.append([os.path.abspath(url), stat.st_size, stat.st_mtime_ns])
    document = {
        "shards": shards,
        "extractor": extractor,
        "image_size": image_size,
        "max_images": max_images,
        "preprocess": "adm_center_crop",
        "version": 1,
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def reference_from_shards(
    urls: Iterable[str],
    extractor: FeatureExtractor,
    *,
    image_size: int,
    cache_dir: str | Path | None = None,
    max_images: int | None = None,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> ReferenceStatistics:
    """Reference statistics of the images in ``urls`` (tar shard paths), cached in ``cache_dir`` when given."""
    urls = list(urls)
    if not urls:
        raise FileNotFoundError("no reference shards given")
    key = shards_cache_key(urls, extractor.fingerprint, image_size=image_size, max_images=max_images)
    cache_path = Path(cache_dir) / f"reference-{key[:24]}.npz" if cache_dir is not None else None
    if cache_path is not None and cache_path.is_file():
        logger.info("reference statistics: cache hit %s", cache_path)
        cached = load_reference_npz(cache_path)
        assert cached.mu is not None and cached.sigma is not None and cached.features is not None
        return ReferenceStatistics(
            cached.mu, cached.sigma, cached.features, cached.extractor, len(cached.features), str(cache_path)
        )
    images = iter_shard_images(urls, image_size, limit=max_images)
    features, _ = extract_features(extractor, image_batches(images, batch_size), device=device)
    reference = reference_from_features(
        features.numpy(), extractor=extractor.fingerprint, source=f"{len(urls)} shards ({urls[0]}, ...)"
    )
    if cache_path is not None:
        save_reference_npz(
            cache_path,
            mu=reference.mu,
            sigma=reference.sigma,
            features=reference.features,
            extractor=extractor.fingerprint,
        )
        logger.info("reference statistics of %d images cached at %s", reference.num_images, cache_path)
    return reference


def reference_from_npz(
    path: str | Path,
    extractor: FeatureExtractor,
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> ReferenceStatistics:
    """Reference statistics from an ADM reference batch or a varkit reference ``.npz``.

    Stored ``mu``/``sigma`` are used when they belong to ``extractor``: a varkit file must carry the same
    fingerprint; an ADM file (no fingerprint, TF Inception statistics) is accepted for ``inception_fid`` extractors
    of the same dimension. Otherwise, or when features are needed and missing, the features are computed from the
    file's ``arr_0`` images. KID and precision/recall need per-image features, so they are unavailable for a file
    holding only ``mu``/``sigma`` (``features`` is then ``None``).
    """
    batch = load_reference_npz(path)
    fingerprint = extractor.fingerprint
    stats_match = batch.mu is not None and batch.mu.shape[0] == extractor.feature_dim
    if batch.extractor is not None:
        stats_match = stats_match and batch.extractor == fingerprint
    else:
        stats_match = stats_match and fingerprint.startswith("inception_fid")
    features = batch.features if batch.extractor == fingerprint else None
    if features is None and batch.images is not None:
        images = (image for image in batch.images)
        features = extract_features(extractor, image_batches(images, batch_size), device=device)[0].numpy()
    if stats_match:
        assert batch.mu is not None and batch.sigma is not None
        count = len(features) if features is not None else (len(batch.images) if batch.images is not None else 0)
        return ReferenceStatistics(batch.mu, batch.sigma, features, batch.extractor, count, str(path))
    if features is None:
        raise ValueError(
            f"{path}: its statistics were not computed with extractor {fingerprint!r} and it holds no images "
            "to recompute them from"
        )
    return reference_from_features(features, extractor=fingerprint, source=str(path))
