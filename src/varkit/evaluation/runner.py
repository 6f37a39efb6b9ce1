"""One evaluation: features of generated images against reference statistics → every figure, as plain data.

Used by ``varkit eval`` and the in-training callback. Figures follow the VAR paper's evaluation (Tian et al. 2024,
§5): FID and IS, plus sFID, KID and improved precision/recall (k = 3) as ADM's evaluator reports them, and, for
class-conditional samples and an extractor whose head classifies the dataset's labels, the classifier accuracy.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from varkit.evaluation.features import FeatureExtractor, extract_all
from varkit.evaluation.metrics import (
    classifier_accuracy,
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
    logits: np.ndarray | None,
    reference: ReferenceStatistics,
    settings: MetricSettings = MetricSettings(),
    *,
    device: str = "cpu",
    spatial: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    dataset_classifier: bool = False,
) -> dict[str, Any]:
    """FID, sFID, IS, KID, precision/recall, classifier accuracy of sample features against ``reference``.

    A figure that cannot be computed is ``None`` with a sentence in ``notes``: IS without ``logits``; sFID without
    ``spatial`` features or reference spatial statistics; classifier accuracy without ``labels`` (the requested
    classes) or when the extractor's head is not a classifier of the dataset's labels (``dataset_classifier``).
    """
    if pool.shape[1] != reference.mu.shape[0]:
        raise ValueError(
            f"sample features have dimension {pool.shape[1]} but the reference statistics {reference.mu.shape[0]}: "
            "they come from different feature extractors"
        )
    mu, sigma = gaussian_statistics(pool)
    result: dict[str, Any] = {
        "fid": frechet_distance(mu, sigma, reference.mu, reference.sigma),
        "sfid": None,
        "inception_score": None,
        "inception_score_std": None,
        "inception_score_splits": None,
        "classifier_accuracy": None,
        "reference_accuracy": reference.accuracy,
        "kid": None,
        "kid_std": None,
        "precision": None,
        "recall": None,
        "num_samples": len(pool),
        "num_reference": reference.num_images,
        "notes": [],
    }
    if logits is not None:
        splits = min(settings.inception_score_splits, len(logits))
        score = inception_score(logits, splits=splits)
        result.update(inception_score=score.mean, inception_score_std=score.std, inception_score_splits=splits)
    else:
        result["notes"].append(
            "the feature extractor has no classifier head (pool features only): the Inception Score and the "
            "classifier accuracy are unavailable"
        )
    if spatial is not None and reference.mu_s is not None and reference.sigma_s is not None:
        if spatial.shape[1] != reference.mu_s.shape[0]:
            raise ValueError(
                f"sample spatial features have dimension {spatial.shape[1]} but the reference's "
                f"{reference.mu_s.shape[0]}: they come from different feature extractors"
            )
        result["sfid"] = frechet_distance(*gaussian_statistics(spatial), reference.mu_s, reference.sigma_s)
    else:
        result["notes"].append("sFID needs spatial features of both samples and reference (mu_s/sigma_s)")
    if labels is not None and logits is not None:
        labels = np.asarray(labels)
        if dataset_classifier and len(labels) and labels.min() >= 0 and labels.max() < logits.shape[1]:
            result["classifier_accuracy"] = classifier_accuracy(logits, labels)
        elif dataset_classifier:
            result["notes"].append(
                f"classifier accuracy needs requested classes within the extractor's {logits.shape[1]} classes"
            )
        else:
            result["notes"].append(
                "classifier accuracy needs an extractor whose head classifies the dataset's labels "
                "(e.g. evaluator=tiny_demo); this one's classes are not the samples' classes"
            )
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
    labels: np.ndarray | None = None,
) -> dict[str, Any]:
    """Extract features of ``uint8`` ``(n, H, W, 3)`` images and compute every metric against ``reference``.

    ``labels``: the classes the images were generated for (class-conditional samples), for classifier accuracy.
    """
    if reference.extractor is not None and reference.extractor != extractor.fingerprint:
        raise ValueError(
            f"reference statistics were computed with {reference.extractor!r}, not {extractor.fingerprint!r}"
        )
    out = extract_all(extractor, image_batches(iter(images), batch_size), device=device)
    return compute_metrics(
        out.pool.numpy(),
        out.logits.numpy() if out.logits is not None else None,
        reference,
        settings,
        device=str(torch.device(device)),
        spatial=out.spatial.numpy() if out.spatial is not None else None,
        labels=labels,
        dataset_classifier=bool(getattr(extractor, "dataset_classifier", False)),
    )
