"""The feature-extractor front door: build any registered extractor by name (built-ins registered on import)."""

from __future__ import annotations

from typing import Any

from varkit.evaluation.features import FeatureExtractor
from varkit.evaluation.fid_helper import load_fid_helper_inception  # noqa: F401  (``inception_fid_helper``)
from varkit.evaluation.inception import load_fid_inception  # noqa: F401  (registers ``inception_fid``)
from varkit.evaluation.tiny import TinyExtractor  # noqa: F401  (registers ``tiny``)
from varkit.registry import FEATURE_EXTRACTORS

__all__ = ["build_extractor"]


def build_extractor(spec: str | dict[str, Any], **overrides: Any) -> FeatureExtractor:
    """Build a registered extractor from a name or a ``{"name": ..., **arguments}`` mapping."""
    return FEATURE_EXTRACTORS.build(spec, **overrides)
