"""Feature extractors for sample-quality metrics: the protocol, the registry front door and the extraction loop.

FID, IS, KID and precision/recall (VAR paper, Tian et al. 2024, §5 and Table 1) are all computed on the
features of one fixed network. The standard network is the TensorFlow Inception-v3 of 2015-12-05 ported to PyTorch
by pytorch-fid (``inception_fid``, :mod:`varkit.evaluation.inception`); ``tiny``
(:mod:`varkit.evaluation.tiny`) is a seeded random convolutional network for tests and demos, whose figures are
only comparable with themselves.

An extractor maps ``uint8`` images ``(b, 3, H, W)`` to :class:`Features`: ``pool`` ``(b, d)`` (FID, KID,
precision/recall), ``logits`` ``(b, classes)`` (Inception Score, classifier accuracy; ``None`` for a network without
a classifier head) and ``spatial`` ``(b, s)`` (sFID: flattened intermediate spatial features, as ADM's evaluator,
which keeps the first 7 channels of Inception's ``mixed_6/conv`` 17×17 map, i.e. 2023 values). Its
:attr:`~FeatureExtractor.fingerprint` identifies network + weights + preprocessing, so cached reference statistics
are never mixed across extractors.

Weights of ``inception_fid`` come only from a local file (nothing is downloaded): the pytorch-fid release asset
``pt_inception-2015-12-05-6726825d.pth`` (also shipped by torch-fidelity as
``weights-inception-2015-12-05-6726825d.pth``). The ``6726825d`` in its name is, by torch.hub's naming convention,
the start of its SHA-256, whose full value is
:data:`varkit.evaluation.inception.FID_INCEPTION_SHA256`; the file is checked before loading.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from varkit.registry import FEATURE_EXTRACTORS

__all__ = [
    "FEATURE_EXTRACTORS",
    "ChecksumError",
    "FeatureExtractor",
    "Features",
    "check_uint8_images",
    "extract_all",
    "extract_features",
    "file_sha256",
    "resize_bilinear_tf1",
]

logger = logging.getLogger(__name__)


class ChecksumError(ValueError):
    """A weights file whose SHA-256 is not the documented one."""


@dataclass
class Features:
    """Per-image features: ``pool`` ``(b, d)``, ``logits`` ``(b, classes)`` or ``None`` (no classifier head),
    ``spatial`` ``(b, s)`` or ``None`` (no spatial output; sFID then unavailable)."""

    pool: Tensor
    logits: Tensor | None
    spatial: Tensor | None = None


@runtime_checkable
class FeatureExtractor(Protocol):
    """What the metrics need from a network.

    ``feature_dim``: size of ``pool``; ``num_classes``: size of ``logits``; ``fingerprint``: a string that changes
    whenever the features would (weights, architecture, preprocessing).
    """

    feature_dim: int
    num_classes: int

    @property
    def fingerprint(self) -> str: ...

    def __call__(self, images: Tensor) -> Features: ...

    def to(self, device: torch.device | str) -> Any: ...


def file_sha256(path: str | Path, *, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_uint8_images(images: Tensor) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected uint8 images (b, 3, H, W), got {images.dtype} {tuple(images.shape)}")


def resize_bilinear_tf1(images: Tensor, size: int) -> Tensor:
    """Bilinear resize as TensorFlow 1's ``ResizeBilinear`` (``align_corners=False``, no half-pixel centres).

    The FID/ADM Inception graph resizes this way; output pixel ``i`` samples the input at ``i * in / out`` (torch's
    ``interpolate`` samples at ``(i + 0.5) * in / out - 0.5``), which shifts FID measurably at small sizes.
    ``images``: float ``(b, c, h, w)``.
    """

    def axis(length: int) -> tuple[Tensor, Tensor, Tensor]:
        source = torch.arange(size, dtype=torch.float64, device=images.device) * (length / size)
        lower = source.floor().long().clamp(max=length - 1)
        upper = (lower + 1).clamp(max=length - 1)
        return lower, upper, (source - lower).to(images.dtype)

    top, bottom, dy = axis(images.shape[-2])
    left, right, dx = axis(images.shape[-1])
    rows = images[..., top, :] + (images[..., bottom, :] - images[..., top, :]) * dy[:, None]
    return rows[..., left] + (rows[..., right] - rows[..., left]) * dx


@torch.inference_mode()
def extract_all(
    extractor: Callable[[Tensor], Features],
    batches: Iterable[Tensor],
    *,
    device: torch.device | str = "cpu",
) -> Features:
    """Run ``extractor`` over ``uint8`` image batches; every output float64 on the CPU (absent ones ``None``)."""
    if isinstance(extractor, nn.Module) and extractor.training:
        raise ValueError("the feature extractor is in training mode (batch statistics would leak between images)")
    parts: dict[str, list[Tensor]] = {"pool": [], "logits": [], "spatial": []}
    for batch in batches:
        out = extractor(batch.to(device))
        for name in parts:
            value = getattr(out, name)
            if value is not None:
                parts[name].append(value.double().cpu())
    if not parts["pool"]:
        raise ValueError("no images to extract features from")
    count = len(parts["pool"])
    joined = {name: torch.cat(values) if len(values) == count else None for name, values in parts.items()}
    pool = joined.pop("pool")
    assert pool is not None
    return Features(pool=pool, **joined)


def extract_features(
    extractor: Callable[[Tensor], Features],
    batches: Iterable[Tensor],
    *,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor | None]:
    """Run ``extractor`` over ``uint8`` image batches; returns ``(pool, logits)`` float64 on the CPU."""
    out = extract_all(extractor, batches, device=device)
    return out.pool, out.logits
