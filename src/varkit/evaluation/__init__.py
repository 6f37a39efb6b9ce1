"""Sample-quality evaluation (VAR paper, Tian et al. 2024, §5): FID, IS, KID, precision/recall, ADM ``.npz`` files,
reference statistics and the paper's comparison table, plus ADM's sFID and class-conditional classifier accuracy.
Plain torch/numpy: no Lightning, no Hydra, no scipy. Importing this package registers the built-in feature
extractors (``inception_fid``, ``inception_fid_helper``, ``tiny``).

>>> import numpy as np
>>> from varkit.evaluation import frechet_distance, gaussian_statistics
>>> features = np.random.default_rng(0).normal(size=(500, 4))
>>> round(frechet_distance(*gaussian_statistics(features), *gaussian_statistics(features)), 9)
0.0
"""

from varkit.evaluation.extractors import build_extractor
from varkit.evaluation.features import FEATURE_EXTRACTORS, FeatureExtractor, Features, extract_all, extract_features
from varkit.evaluation.inception import FID_INCEPTION_SHA256, InceptionV3FID, load_fid_inception
from varkit.evaluation.metrics import (
    classifier_accuracy,
    frechet_distance,
    gaussian_statistics,
    inception_score,
    kernel_inception_distance,
    precision_recall,
)
from varkit.evaluation.npz import load_reference_npz, load_samples_npz, save_reference_npz, save_samples_npz
from varkit.evaluation.runner import MetricSettings, compute_metrics, evaluate_images
from varkit.evaluation.stats import ReferenceStatistics, reference_from_npz, reference_from_shards
from varkit.evaluation.table import ComparisonRow, relative_times, render_table
from varkit.evaluation.tiny import TinyExtractor

__all__ = [
    "FEATURE_EXTRACTORS",
    "FID_INCEPTION_SHA256",
    "ComparisonRow",
    "FeatureExtractor",
    "Features",
    "InceptionV3FID",
    "MetricSettings",
    "ReferenceStatistics",
    "TinyExtractor",
    "build_extractor",
    "classifier_accuracy",
    "compute_metrics",
    "evaluate_images",
    "extract_all",
    "extract_features",
    "frechet_distance",
    "gaussian_statistics",
    "inception_score",
    "kernel_inception_distance",
    "load_fid_inception",
    "load_reference_npz",
    "load_samples_npz",
    "precision_recall",
    "reference_from_npz",
    "reference_from_shards",
    "relative_times",
    "render_table",
    "save_reference_npz",
    "save_samples_npz",
]
