"""OpenAI ADM-evaluator ``.npz`` files: sample batches and reference batches.

The VAR paper's FID/IS/precision/recall (Tian et al. 2024, §5) come from the evaluator of "Diffusion Models Beat
GANs" (Dhariwal & Nichol 2021, ``evaluations/evaluator.py``). It reads:

* a sample batch: ``arr_0`` — ``uint8`` images ``(n, H, W, 3)`` (NHWC, RGB);
* a reference batch: ``arr_0`` images as above (optional for FID), and the pool-feature statistics ``mu`` ``(2048,)``,
  ``sigma`` ``(2048, 2048)``, and ``mu_s`` ``(2023,)``/``sigma_s`` the spatial statistics for sFID.

varkit writes files in this layout so that ``python evaluator.py ref.npz samples.npz`` works on them unchanged; a
reference written by varkit may also hold ``features`` (pool features, for KID and precision/recall without images)
and ``extractor`` (the fingerprint of the network that produced the statistics). Extra keys are ignored by ADM.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["ReferenceBatch", "load_reference_npz", "load_samples_npz", "save_reference_npz", "save_samples_npz"]


def _check_nhwc_uint8(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images (n, H, W, 3), got {images.dtype} {images.shape}")
    return images


def save_samples_npz(path: str | Path, images: np.ndarray) -> Path:
    """Write ``uint8`` ``(n, H, W, 3)`` images as ADM's sample batch (``arr_0``); returns the path.

    The file is byte-for-byte a function of the images (an uncompressed zip like ``np.savez``'s, with a fixed
    member timestamp instead of the current time), so equal samples give equal files and equal hashes; it is
    written to a temporary name and renamed, so a killed run never leaves a truncated batch.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = np.ascontiguousarray(_check_nhwc_uint8(images))
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            info = zipfile.ZipInfo("arr_0.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w", force_zip64=True) as stream:
                np.lib.format.write_array(stream, images, allow_pickle=False)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def load_samples_npz(path: str | Path) -> np.ndarray:
    """The ``arr_0`` images ``(n, H, W, 3)`` ``uint8`` of an ADM sample (or reference) batch."""
    with np.load(path) as data:
        if "arr_0" not in data:
            raise KeyError(f"{path} has no 'arr_0' array (keys: {sorted(data.keys())}); not an ADM sample batch")
        return _check_nhwc_uint8(data["arr_0"])


@dataclass
class ReferenceBatch:
    """Contents of a reference ``.npz``; absent entries are ``None``."""

    mu: np.ndarray | None = None
    sigma: np.ndarray | None = None
    images: np.ndarray | None = None
    features: np.ndarray | None = None
    extractor: str | None = None
    mu_s: np.ndarray | None = None
    sigma_s: np.ndarray | None = None
    accuracy: float | None = None


def save_reference_npz(
    path: str | Path,
    *,
    mu: np.ndarray,
    sigma: np.ndarray,
    images: np.ndarray | None = None,
    features: np.ndarray | None = None,
    extractor: str | None = None,
    mu_s: np.ndarray | None = None,
    sigma_s: np.ndarray | None = None,
    accuracy: float | None = None,
) -> Path:
    """Write a reference batch in ADM's layout (``mu``, ``sigma``, optional ``mu_s``/``sigma_s`` and ``arr_0``) plus
    varkit's extras (``features``, ``extractor``, ``accuracy``: the extractor's classifier accuracy on them)."""
    mu, sigma = np.asarray(mu, dtype=np.float64), np.asarray(sigma, dtype=np.float64)
    if sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"sigma {sigma.shape} does not match mu {mu.shape}")
    arrays: dict[str, np.ndarray] = {"mu": mu, "sigma": sigma}
    if images is not None:
        arrays["arr_0"] = _check_nhwc_uint8(images)
    if features is not None:
        arrays["features"] = np.asarray(features, dtype=np.float32)
    if extractor is not None:
        arrays["extractor"] = np.array(extractor)
    if mu_s is not None and sigma_s is not None:
        arrays["mu_s"] = np.asarray(mu_s, dtype=np.float64)
        arrays["sigma_s"] = np.asarray(sigma_s, dtype=np.float64)
    if accuracy is not None:
        arrays["accuracy"] = np.array(float(accuracy))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def load_reference_npz(path: str | Path) -> ReferenceBatch:
    """Read an ADM reference batch (e.g. ``VIRTUAL_imagenet512.npz``) or one written by :func:`save_reference_npz`."""
    with np.load(path, allow_pickle=False) as data:
        keys = set(data.keys())
        if not keys & {"mu", "arr_0", "features"}:
            raise KeyError(f"{path} holds neither 'mu'/'sigma', 'arr_0' nor 'features' (keys: {sorted(keys)})")
        batch = ReferenceBatch(
            mu=data["mu"].astype(np.float64) if "mu" in keys else None,
            sigma=data["sigma"].astype(np.float64) if "sigma" in keys else None,
            images=_check_nhwc_uint8(data["arr_0"]) if "arr_0" in keys else None,
            features=data["features"].astype(np.float64) if "features" in keys else None,
            extractor=str(data["extractor"]) if "extractor" in keys else None,
            mu_s=data["mu_s"].astype(np.float64) if "mu_s" in keys and "sigma_s" in keys else None,
            sigma_s=data["sigma_s"].astype(np.float64) if "mu_s" in keys and "sigma_s" in keys else None,
            accuracy=float(data["accuracy"]) if "accuracy" in keys else None,
        )
    if (batch.mu is None) != (batch.sigma is None):
        raise KeyError(f"{path} has only one of 'mu' and 'sigma'")
    return batch
