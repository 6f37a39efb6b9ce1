"""LPIPS-style perceptual loss on a VGG16 feature stack (VAR paper, Sec. 4: the VQGAN tokenizer objective).

LPIPS (Zhang et al., 2018): both images go through VGG16; at five depths (relu1_2, relu2_2, relu3_3, relu4_3,
relu5_3) the features are unit-normalised along channels, their squared difference is weighted per channel by a
learned non-negative linear layer, averaged over space and summed over depths.

Written in plain torch (torchvision is not a dependency). The weights come from LOCAL files only:

* ``vgg_weights``: a state dict in torchvision's ``vgg16`` layout (keys ``features.N.weight`` / ``features.N.bias``;
  classifier keys are ignored), as ``.safetensors`` or a ``torch.save`` file (loaded with ``weights_only=True``);
* ``lpips_weights`` (optional): the LPIPS linear layers (keys ending in ``lin0.model.1.weight`` ...
  ``lin4.model.1.weight``, or ``lin0.weight`` ...), shape ``(1, C, 1, 1)``. Without them every channel gets the
  weight ``1 / C`` (a plain normalised-feature distance).

The VGG weights are non-persistent buffers: they never enter optimisers or training checkpoints.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["VGG16_LAYOUT", "LPIPSLoss", "VGG16Features", "build_perceptual_loss", "load_state_file"]

logger = logging.getLogger(__name__)

#: torchvision ``vgg16().features`` as (index, in_channels, out_channels) per conv; "M" = 2x2 max-pool index
VGG16_LAYOUT: tuple[tuple[int, int, int] | int, ...] = (
    (0, 3, 64), (2, 64, 64), 4,
    (5, 64, 128), (7, 128, 128), 9,
    (10, 128, 256), (12, 256, 256), (14, 256, 256), 16,
    (17, 256, 512), (19, 512, 512), (21, 512, 512), 23,
    (24, 512, 512), (26, 512, 512), (28, 512, 512),
)  # fmt: skip
#: conv indices whose ReLU output LPIPS taps (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3)
LPIPS_TAPS: tuple[int, ...] = (2, 7, 14, 21, 28)
LPIPS_CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 512)
# LPIPS's input scaling, applied to images in [-1, 1] (its ScalingLayer constants)
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def load_state_file(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a local ``.safetensors`` or ``torch.save`` state-dict file (never unpickles code)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"perceptual-loss weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    from varkit.safe_load import load_torch_file

    loaded = load_torch_file(path, what="perceptual-loss weights file")
    if isinstance(loaded, dict) and "state_dict" in loaded and isinstance(loaded["state_dict"], dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return {str(k): v for k, v in loaded.items() if isinstance(v, Tensor)}


class VGG16Features(nn.Module):
    """VGG16's convolutional stack (frozen), returning the ReLU outputs at :data:`LPIPS_TAPS`.

    ``state`` holds torchvision-layout weights (``features.N.weight``/``bias``); every conv must be present.
    """

    def __init__(self, state: dict[str, Tensor]) -> None:
        super().__init__()
        missing = []
        for entry in VGG16_LAYOUT:
            if isinstance(entry, int):
                continue
            index, in_channels, out_channels = entry
            weight, bias = state.get(f"features.{index}.weight"), state.get(f"features.{index}.bias")
            if weight is None or bias is None:
                missing.append(f"features.{index}")
                continue
            if tuple(weight.shape) != (out_channels, in_channels, 3, 3):
                raise ValueError(
                    f"features.{index}.weight has shape {tuple(weight.shape)}, expected "
                    f"{(out_channels, in_channels, 3, 3)}: not torchvision's vgg16 layout"
                )
            self.register_buffer(f"conv{index}_weight", weight.detach().float().clone(), persistent=False)
            self.register_buffer(f"conv{index}_bias", bias.detach().float().clone(), persistent=False)
        if missing:
            raise KeyError(f"the VGG16 weights lack {', '.join(missing)} (expected torchvision's vgg16 key layout)")

    def forward(self, images: Tensor) -> list[Tensor]:
        """Scaled images ``(b, 3, H, W)`` -> five feature maps (relu1_2 ... relu5_3)."""
        taps: list[Tensor] = []
        hidden = images
        for entry in VGG16_LAYOUT:
            if isinstance(entry, int):
                hidden = F.max_pool2d(hidden, kernel_size=2, stride=2)
                continue
            index = entry[0]
            weight, bias = getattr(self, f"conv{index}_weight"), getattr(self, f"conv{index}_bias")
            hidden = F.relu(F.conv2d(hidden, weight.to(hidden.dtype), bias.to(hidden.dtype), padding=1))
            if index in LPIPS_TAPS:
                taps.append(hidden)
        return taps


def _lpips_linear_weights(state: dict[str, Tensor]) -> list[Tensor] | None:
    found: dict[int, Tensor] = {}
    for key, value in state.items():
        match = re.search(r"(?:^|\.)lin(\d)(?:\.model\.1)?\.weight$", key)
        if match:
            found[int(match.group(1))] = value
    if not found:
        return None
    if sorted(found) != list(range(len(LPIPS_CHANNELS))):
        raise KeyError(f"LPIPS linear weights lin0..lin4 expected, found lin{sorted(found)}")
    weights = []
    for i, channels in enumerate(LPIPS_CHANNELS):
        weight = found[i].detach().float().reshape(-1)
        if weight.numel() != channels:
            raise ValueError(f"LPIPS lin{i} has {weight.numel()} weights, expected {channels}")
        weights.append(weight.clone())
    return weights


class LPIPSLoss(nn.Module):
    """LPIPS distance ``(b,)`` between two image batches in [-1, 1] (frozen; gradients flow to the inputs).

    Args:
        vgg_state: torchvision-layout VGG16 weights.
        linear_weights: five per-channel weight vectors (LPIPS ``lin0..lin4``); ``None`` = uniform ``1/C``.
    """

    def __init__(self, vgg_state: dict[str, Tensor], linear_weights: list[Tensor] | None = None) -> None:
        super().__init__()
        self.features = VGG16Features(vgg_state)
        self.uses_lpips_weights = linear_weights is not None
        if linear_weights is None:
            linear_weights = [torch.full((c,), 1.0 / c) for c in LPIPS_CHANNELS]
        for i, weight in enumerate(linear_weights):
            self.register_buffer(f"lin{i}", weight.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_files(cls, vgg_weights: str | Path, lpips_weights: str | Path | None = None) -> LPIPSLoss:
        """Load from local files (the LPIPS linear layers may also live in the VGG file)."""
        state = load_state_file(vgg_weights)
        linear = _lpips_linear_weights(load_state_file(lpips_weights)) if lpips_weights else None
        if linear is None:
            linear = _lpips_linear_weights(state)
        return cls(state, linear)

    def train(self, mode: bool = True) -> LPIPSLoss:
        # a frozen metric network: always in eval mode, whatever the surrounding module does
        return super().train(False)

    def forward(self, reconstruction: Tensor, target: Tensor) -> Tensor:
        """Per-sample perceptual distance ``(b,)`` (float32)."""
        both = torch.cat([reconstruction, target.to(reconstruction.dtype)], dim=0)
        shift, scale = self.get_buffer("shift"), self.get_buffer("scale")
        both = (both - shift.to(both.dtype)) / scale.to(both.dtype)
        distance = both.new_zeros(reconstruction.shape[0], dtype=torch.float32)
        for i, features in enumerate(self.features(both)):
            features = features.float()
            # unit-normalise along channels so every depth contributes on the same scale (LPIPS Eq. 1)
            features = features / (features.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)
            recon_features, target_features = features.chunk(2, dim=0)
            weighted = (recon_features - target_features).square() * getattr(self, f"lin{i}")
            distance = distance + weighted.sum(dim=1).mean(dim=(1, 2))
        return distance


def build_perceptual_loss(vgg_weights: str | Path | None, lpips_weights: str | Path | None = None) -> LPIPSLoss | None:
    """The perceptual loss from local files, or ``None`` (loss off, logged once) when no VGG file is given."""
    if not vgg_weights:
        logger.info(
            "perceptual loss is off: no VGG16 weights file given (set loss.perceptual.vgg_weights to a local "
            "torchvision-layout vgg16 state dict to enable it)"
        )
        return None
    loss = LPIPSLoss.from_files(vgg_weights, lpips_weights)
    logger.info(
        "perceptual loss: VGG16 from %s, %s", vgg_weights, "LPIPS weights" if loss.uses_lpips_weights else "uniform"
    )
    return loss
