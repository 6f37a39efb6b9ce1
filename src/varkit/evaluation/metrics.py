"""Sample-quality metrics on extracted features: FID, Inception Score, KID, precision/recall.

These are the figures of the VAR paper's comparison tables (Tian et al. 2024, Table 1 and §5: FID, IS, precision,
recall on ImageNet, measured with OpenAI's ADM evaluator). Each function takes plain feature arrays, so the maths
is testable against closed forms and independent of the network that produced the features.

* FID (Heusel et al. 2017): ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2})``. The trace of the matrix square
  root is computed from symmetric eigendecompositions in float64 (``tr (S1 S2)^{1/2} = sum sqrt(eig(A S2 A))``
  with ``A = S1^{1/2}``), which needs no scipy and never returns complex values.
* IS (Salimans et al. 2016): ``exp E_x KL(p(y|x) || p(y))`` over splits; mean and standard deviation.
* KID (Bińkowski et al. 2018): unbiased MMD² with the cubic polynomial kernel ``(x·y / d + 1)^3``, averaged over
  random subsets.
* Precision/recall (Kynkäänniemi et al. 2019): k-NN hyperspheres around each feature (k = 3 as in ADM's
  evaluator); precision = share of samples inside the real manifold, recall = share of real images inside the
  sample manifold.
* sFID (Nash et al. 2021, reported by ADM's evaluator): the Fréchet distance of spatial features (ADM: the first 7
  channels of Inception's 17×17 ``mixed_6/conv`` map, flattened); the same :func:`frechet_distance`.
* Classifier accuracy: the share of class-conditional samples that the extractor's classifier assigns to the
  class they were generated for (argmax of the logits); meaningful only for a classifier of the dataset's labels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "ScoreWithSpread",
    "classifier_accuracy",
    "frechet_distance",
    "gaussian_statistics",
    "inception_score",
    "kernel_inception_distance",
    "knn_radii",
    "precision_recall",
    "trace_sqrt_product",
]

logger = logging.getLogger(__name__)

ArrayLike = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class ScoreWithSpread:
    """A score averaged over splits/subsets, with its standard deviation across them."""

    mean: float
    std: float


def _as_float64(values: ArrayLike) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)


def gaussian_statistics(features: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(d,)`` and unbiased covariance ``(d, d)`` of ``(n, d)`` features, in float64 (as ADM/pytorch-fid)."""
    features = _as_float64(features)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need (n >= 2, d) features, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Principal square root of a symmetric positive semi-definite matrix (tiny negative eigenvalues → 0)."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2.0)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr((sigma1 @ sigma2)^{1/2})`` for covariance matrices.

    ``S1 S2`` is not symmetric, but it is similar to the symmetric PSD matrix ``S1^{1/2} S2 S1^{1/2}`` (same
    eigenvalues), so the trace of its square root is the sum of the square roots of that matrix's eigenvalues.
    """
    root = _symmetric_sqrt(_as_float64(sigma1))
    inner = root @ _as_float64(sigma2) @ root
    eigenvalues = np.linalg.eigvalsh((inner + inner.T) / 2.0)
    return float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (FID when fed Inception statistics)."""
    mu1, mu2 = _as_float64(mu1), _as_float64(mu2)
    sigma1, sigma2 = _as_float64(sigma1), _as_float64(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0],) * 2:
        raise ValueError(
            f"statistics do not match: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape} "
            "(were they computed with the same feature extractor?)"
        )
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2)
    # rounding can make the distance of (near-)identical statistics slightly negative
    return float(max(value, 0.0))


def inception_score(logits: ArrayLike, *, splits: int = 10) -> ScoreWithSpread:
    """Inception Score from classifier logits ``(n, classes)``: mean and std over ``splits`` consecutive splits.

    ADM's evaluator uses splits of 5000 images (10 splits for 50k samples); ``splits=10`` matches it there.
    """
    logits = _as_float64(logits)
    n = logits.shape[0]
    if not 1 <= splits <= n:
        raise ValueError(f"need 1 <= splits <= number of images ({n}), got {splits}")
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    scores = []
    for part in np.array_split(log_probs, splits):
        probs = np.exp(part)
        log_marginal = np.log(probs.mean(axis=0))
        kl = (probs * (part - log_marginal)).sum(axis=1).mean()
        scores.append(np.exp(kl))
    return ScoreWithSpread(float(np.mean(scores)), float(np.std(scores)))


def classifier_accuracy(logits: ArrayLike, labels: ArrayLike) -> float:
    """Share of images whose logits' argmax equals their label: ``mean(argmax(logits, 1) == labels)``.

    For class-conditional samples ``labels`` are the requested classes; ties resolve to the lowest class index
    (``argmax``). ``logits``: ``(n, classes)``; ``labels``: ``(n,)`` integers.
    """
    logits = _as_float64(logits)
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).astype(np.int64).reshape(-1)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0] or logits.shape[0] == 0:
        raise ValueError(f"need (n, classes) logits and n labels, got {logits.shape} and {labels.shape}")
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ValueError(f"labels must lie in [0, {logits.shape[1]}), got {labels.min()}..{labels.max()}")
    return float((logits.argmax(axis=1) == labels).mean())


def _polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** degree


def kernel_inception_distance(
    real: ArrayLike,
    fake: ArrayLike,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    seed: int = 0,
) -> ScoreWithSpread:
    """KID: unbiased MMD² with kernel ``(x·y/d + 1)^degree`` over ``subsets`` random subsets of ``subset_size``.

    Subsets are drawn without replacement within each subset (as torch-fidelity), from ``seed``. A subset size
    above the number of available features is reduced to it, with a warning.
    """
    real, fake = _as_float64(real), _as_float64(fake)
    size = min(subset_size, real.shape[0], fake.shape[0])
    if size < 2:
        raise ValueError("KID needs at least 2 real and 2 generated features")
    if size < subset_size:
        logger.warning("KID subset size reduced from %d to %d (not enough features)", subset_size, size)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x = real[rng.choice(real.shape[0], size, replace=False)]
        y = fake[rng.choice(fake.shape[0], size, replace=False)]
        k_xx = _polynomial_kernel(x, x, degree)
        k_yy = _polynomial_kernel(y, y, degree)
        k_xy = _polynomial_kernel(x, y, degree)
        within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (size * (size - 1))
        values.append(within - 2.0 * k_xy.mean())
    return ScoreWithSpread(float(np.mean(values)), float(np.std(values)))


def _pairwise_distances(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    # the direct form, not cdist's matmul shortcut: distances are compared against radii, so cancellation matters
    sq = (rows * rows).sum(1)[:, None] + (cols * cols).sum(1)[None, :] - 2.0 * rows @ cols.T
    return sq.clamp_min_(0.0).sqrt_()


def knn_radii(features: ArrayLike, *, k: int = 3, batch_size: int = 4096, device: str = "cpu") -> np.ndarray:
    """Distance of each feature to its ``k``-th nearest other feature (the radius of its k-NN hypersphere)."""
    points = torch.as_tensor(_as_float64(features), device=device)
    return _radii(points, k, batch_size).cpu().numpy()


def _radii(points: torch.Tensor, k: int, batch_size: int) -> torch.Tensor:
    if points.shape[0] <= k:
        raise ValueError(f"need more than k={k} features for k-NN radii, got {points.shape[0]}")
    radii = []
    for start in range(0, points.shape[0], batch_size):
        distances = _pairwise_distances(points[start : start + batch_size], points)
        # the (k+1)-th smallest: the smallest is the point itself (distance 0)
        radii.append(distances.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def _coverage(
    queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, batch_size: int
) -> tuple[float, np.ndarray]:
    """Share of ``queries`` inside at least one ball ``(centre, radius)``; also the per-query flags."""
    inside = []
    for start in range(0, queries.shape[0], batch_size):
        distances = _pairwise_distances(queries[start : start + batch_size], centres)
        inside.append((distances <= radii[None, :]).any(dim=1))
    flags = torch.cat(inside).cpu().numpy()
    return float(flags.mean()), flags


def precision_recall(
    real: ArrayLike,
    fake: ArrayLike,
    *,
    k: int = 3,
    batch_size: int = 4096,
    device: str = "cpu",
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN manifolds; returns ``(precision, recall)``.

    Precision: share of generated features within the k-NN radius of some real feature. Recall: share of real
    features within the k-NN radius of some generated feature. Distances in float64.
    """
    real_t = torch.as_tensor(_as_float64(real), device=device)
    fake_t = torch.as_tensor(_as_float64(fake), device=device)
    precision, _ = _coverage(fake_t, real_t, _radii(real_t, k, batch_size), batch_size)
    recall, _ = _coverage(real_t, fake_t, _radii(fake_t, k, batch_size), batch_size)
    return precision, recall
