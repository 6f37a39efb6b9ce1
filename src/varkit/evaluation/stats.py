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
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from varkit.evaluation.features import FeatureExtractor, Features, extract_all
from varkit.evaluation.metrics import classifier_accuracy, gaussian_statistics
from varkit.evaluation.npz import load_reference_npz, save_reference_npz
from varkit.evaluation.shard_images import image_batches, iter_shard_samples

__all__ = [
    "ReferenceStatistics",
    "reference_from_features",
    "reference_from_npz",
    "reference_from_shards",
    "shards_cache_key",
]

logger = logging.getLogger(__name__)


@dataclass
class ReferenceStatistics:
    """Real-image statistics for one feature extractor.

    ``mu``/``sigma``: Gaussian statistics of the pool features (FID). ``features``: the pool features themselves
    when available (KID and precision/recall need them). ``extractor``: fingerprint of the extractor, or ``None``
    for ADM files (computed with TensorFlow's Inception graph). ``source``: where they came from. ``mu_s``/
    ``sigma_s``: statistics of the spatial features (sFID), when known. ``accuracy``: the extractor's classifier
    accuracy on these labelled real images (the ceiling for the samples' classifier accuracy), when known.
    """

    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray | None
    extractor: str | None
    num_images: int
    source: str
    mu_s: np.ndarray | None = None
    sigma_s: np.ndarray | None = None
    accuracy: float | None = None


def reference_from_features(
    features: np.ndarray | Features,
    *,
    extractor: str | None,
    source: str,
    labels: np.ndarray | None = None,
    dataset_classifier: bool = False,
) -> ReferenceStatistics:
    """Statistics of already extracted pool features (or of every output of :func:`extract_all`).

    With :class:`Features`, the spatial statistics (sFID) are computed too, and with ``labels`` (all known) and a
    ``dataset_classifier`` extractor the classifier accuracy on these images.
    """
    spatial = logits = None
    if isinstance(features, Features):
        spatial = features.spatial.numpy() if features.spatial is not None else None
        logits = features.logits.numpy() if features.logits is not None else None
        features = features.pool.numpy()
    mu, sigma = gaussian_statistics(features)
    mu_s, sigma_s = gaussian_statistics(spatial) if spatial is not None else (None, None)
    accuracy = None
    if dataset_classifier and logits is not None and labels is not None and len(labels) == len(logits):
        accuracy = classifier_accuracy(logits, labels)
    return ReferenceStatistics(
        mu, sigma, np.asarray(features), extractor, int(features.shape[0]), source, mu_s, sigma_s, accuracy
    )


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
        "version": 2,  # 2: spatial statistics (sFID) and classifier accuracy are cached too
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
            cached.mu,
            cached.sigma,
            cached.features,
            cached.extractor,
            len(cached.features),
            str(cache_path),
            cached.mu_s,
            cached.sigma_s,
            cached.accuracy,
        )
    labels: list[int | None] = []

    def images() -> Iterable[np.ndarray]:
        for image, label in iter_shard_samples(urls, image_size, limit=max_images):
            labels.append(label)
            yield image

    features = extract_all(extractor, image_batches(images(), batch_size), device=device)
    known = None if any(label is None for label in labels) else np.asarray(labels)
    reference = reference_from_features(
        features,
        extractor=extractor.fingerprint,
        source=f"{len(urls)} shards ({urls[0]}, ...)",
        labels=known,
        dataset_classifier=bool(getattr(extractor, "dataset_classifier", False)),
    )
    if cache_path is not None:
        save_reference_npz(
            cache_path,
            mu=reference.mu,
            sigma=reference.sigma,
            features=reference.features,
            extractor=extractor.fingerprint,
            mu_s=reference.mu_s,
            sigma_s=reference.sigma_s,
            accuracy=reference.accuracy,
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
    holding only ``mu``/``sigma`` (``features`` is then ``None``). sFID uses the file's ``mu_s``/``sigma_s`` (ADM
    reference batches hold them) when they match, else the spatial statistics of its images.
    """
    batch = load_reference_npz(path)
    fingerprint = extractor.fingerprint
    stats_match = batch.mu is not None and batch.mu.shape[0] == extractor.feature_dim
    if batch.extractor is not None:
        stats_match = stats_match and batch.extractor == fingerprint
    else:
        stats_match = stats_match and fingerprint.startswith("inception_fid")
    spatial_dim = getattr(extractor, "spatial_dim", None)
    spatial_match = stats_match and batch.mu_s is not None and batch.mu_s.shape[0] == spatial_dim
    features = batch.features if batch.extractor == fingerprint else None
    extracted = None
    if (features is None or not spatial_match) and batch.images is not None:
        images = (image for image in batch.images)
        extracted = extract_all(extractor, image_batches(images, batch_size), device=device)
        features = extracted.pool.numpy()
    if stats_match:
        assert batch.mu is not None and batch.sigma is not None
        count = len(features) if features is not None else (len(batch.images) if batch.images is not None else 0)
        mu_s, sigma_s = (batch.mu_s, batch.sigma_s) if spatial_match else (None, None)
        if mu_s is None and extracted is not None and extracted.spatial is not None:
            mu_s, sigma_s = gaussian_statistics(extracted.spatial.numpy())
        return ReferenceStatistics(
            batch.mu, batch.sigma, features, batch.extractor, count, str(path), mu_s, sigma_s, batch.accuracy
        )
    if extracted is not None:
        return reference_from_features(extracted, extractor=fingerprint, source=str(path))
    if features is None:
        raise ValueError(
            f"{path}: its statistics were not computed with extractor {fingerprint!r} and it holds no images "
            "to recompute them from"
        )
    return reference_from_features(features, extractor=fingerprint, source=str(path))
