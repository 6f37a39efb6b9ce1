"""One evaluation: features of generated images against reference statistics → every figure, as plain data.

Used by ``varkit eval`` and the in-training callback. Figures follow the VAR paper's evaluation (Tian et al. 2024,
§5): FID and IS, plus KID and improved precision/recall (k = 3, as ADM's evaluator).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from varkit.evaluation.features import FeatureExtractor, extract_features
from varkit.evaluation.metrics import (
    frechet_distance,
    gaussian_statistics,
    inception_score,
    kernel_inception_distance,
    precision_recall,
)
from varkit.evaluation.shard_images import image_batches
from varkit.evaluation.stats import ReferenceStatistics

__all__ = ["MetricSettings", "compute_metrics", "evaluate_images"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetricSettings:
    """Metric options: IS splits, KID subsets and subset size, precision/recall neighbourhood ``k``, which to run."""

    inception_score_splits: int = 10
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    precision_recall_k: int = 3
    seed: int = 0
    kid: bool = True
    precision_recall: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compute_metrics(
    pool: np.ndarray,
    logits: np.ndarray,
    reference: ReferenceStatistics,
    settings: MetricSettings = MetricSettings(),
    *,
    device: str = "cpu",
) -> dict[str, Any]:
    """FID, IS, KID, precision/recall of sample features against ``reference`` (``None`` where not computable)."""
    if pool.shape[1] != reference.mu.shape[0]:
        raise ValueError(
            f"sample features have dimension {pool.shape[1]} but the reference statistics {reference.mu.shape[0]}: "
            "they come from different feature extractors"
        )
    mu, sigma = gaussian_statistics(pool)
    splits = min(settings.inception_score_splits, len(logits))
    score = inception_score(logits, splits=splits)
    result: dict[str, Any] = {
        "fid": frechet_distance(mu, sigma, reference.mu, reference.sigma),
        "inception_score": score.mean,
        "inception_score_std": score.std,
        "inception_score_splits": splits,
        "kid": None,
        "kid_std": None,
        "precision": None,
        "recall": None,
        "num_samples": len(pool),
        "num_reference": reference.num_images,
        "notes": [],
    }
    if reference.features is None:
        result["notes"].append("reference holds only mu/sigma: KID and precision/recall need reference features")
    else:
        if settings.kid:
            kid = kernel_inception_distance(
                reference.features,
                pool,
                subsets=settings.kid_subsets,
                subset_size=settings.kid_subset_size,
                seed=settings.seed,
            )
            result["kid"], result["kid_std"] = kid.mean, kid.std
        if settings.precision_recall:
            k = settings.precision_recall_k
            if min(len(pool), len(reference.features)) > k:
                result["precision"], result["recall"] = precision_recall(reference.features, pool, k=k, device=device)
            else:
                result["notes"].append(f"precision/recall need more than k={k} samples and references")
    return result


def evaluate_images(
    images: np.ndarray,
    extractor: FeatureExtractor,
    reference: ReferenceStatistics,
    settings: MetricSettings = MetricSettings(),
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Extract features of ``uint8`` ``(n, H, W, 3)`` images and compute every metric against ``reference``."""
    if reference.extractor is not None and reference.extractor != extractor.fingerprint:
        raise ValueError(
            f"reference statistics were computed with {reference.extractor!r}, not {extractor.fingerprint!r}"
        )
    pool, logits = extract_features(extractor, image_batches(iter(images), batch_size), device=device)
    return compute_metrics(pool.numpy(), logits.numpy(), reference, settings, device=str(torch.device(device)))
