"""Patch discriminator for adversarial tokenizer training (VAR paper, Sec. 4, following VQGAN / pix2pix).

A PatchGAN (Isola et al., 2017) classifies overlapping image patches as real or reconstructed; VQGAN (Esser et
al., 2021) adds it to the autoencoder objective to restore the high-frequency detail that pixel losses blur.
Output: a logit map ``(b, 1, h', w')``, one logit per receptive-field patch.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["PatchDiscriminator"]

_NORMS = ("group", "batch", "none")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "group":
        # GroupNorm does not depend on the batch: stable with the tiny per-device batches of tokenizer training
        return nn.GroupNorm(num_groups=min(32, channels // 4) or 1, num_channels=channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


class PatchDiscriminator(nn.Module):
    """N-layer PatchGAN: strided 4x4 convolutions, LeakyReLU(0.2), a 1-channel logit map.

    Args:
        image_channels: channels of the images (3).
        base_channels: width of the first layer (64 in pix2pix/VQGAN).
        num_layers: strided (2x) layers after the first; the receptive field grows with it (3 -> 70x70 px).
        max_multiplier: cap of the width multiplier (8 in pix2pix).
        norm: ``"group"`` (default), ``"batch"`` (the original) or ``"none"``.

    >>> import torch
    >>> PatchDiscriminator(base_channels=16, num_layers=2)(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 1, 6, 6])
    """

    def __init__(
        self,
        image_channels: int = 3,
        base_channels: int = 64,
        num_layers: int = 3,
        max_multiplier: int = 8,
        norm: str = "group",
    ) -> None:
        super().__init__()
        if norm not in _NORMS:
            raise ValueError(f"unknown discriminator norm {norm!r}; choose one of {', '.join(_NORMS)}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        use_bias = norm == "none"  # a bias right before a normalisation is redundant
        layers: list[nn.Module] = [
            nn.Conv2d(image_channels, base_channels, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        channels = base_channels
        for level in range(1, num_layers + 1):
            # the last block keeps the resolution (stride 1) and only widens, as in pix2pix
            stride = 2 if level < num_layers else 1
            out_channels = base_channels * min(2**level, max_multiplier)
            layers += [
                nn.Conv2d(channels, out_channels, kernel_size=4, stride=stride, padding=1, bias=use_bias),
                _norm(norm, out_channels),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            channels = out_channels
        layers.append(nn.Conv2d(channels, 1, kernel_size=4, stride=1, padding=1))
        self.layers = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DCGAN initialisation: conv weights N(0, 0.02), norm scales N(1, 0.02), zero biases."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.GroupNorm, nn.BatchNorm2d)):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, images: Tensor) -> Tensor:
        """Images ``(b, c, H, W)`` in [-1, 1] -> patch logits ``(b, 1, h', w')``."""
        return self.layers(images)
