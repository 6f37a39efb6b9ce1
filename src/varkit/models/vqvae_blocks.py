"""Convolutional encoder and decoder of VAR's VQVAE (VAR paper, Sec. 4 "VQVAE tokenizer"; the layout of
latent-diffusion's "vq-f16" autoencoder, Rombach et al. 2022, Appendix G).

Each resolution level holds residual blocks (GroupNorm(32) -> SiLU -> 3x3 conv, twice), optionally followed by
single-head self-attention at the lowest resolution; a middle section (block, attention, block) sits at the lowest
resolution. The computation matches the released VAR tokenizer exactly so its weights load
(:mod:`varkit.checkpoint.vqvae` maps the names).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["AttentionBlock", "Decoder", "Downsample", "Encoder", "MiddleBlock", "ResidualBlock", "Upsample"]

#: the released models normalise with 32 groups
NORM_GROUPS = 32
_NORM_EPS = 1e-6


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=NORM_GROUPS, num_channels=channels, eps=_NORM_EPS, affine=True)


class ResidualBlock(nn.Module):
    """``x + conv(drop(silu(norm(conv(silu(norm(x)))))))`` with a 1x1 projection when the width changes."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 1e-6 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        # outside autograd the activations are updated in place: at 256 px each fresh tensor is tens of MB
        inplace = not torch.is_grad_enabled()
        h = self.conv1(F.silu(self.norm1(x), inplace=inplace))
        h = self.conv2(self.dropout(F.silu(self.norm2(h), inplace=inplace)))
        return h.add_(self.shortcut(x)) if inplace else self.shortcut(x) + h


class AttentionBlock(nn.Module):
    """Single-head self-attention over all positions of a feature map, with a residual connection."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, kernel_size=1)
        self.proj = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        qkv = self.qkv(self.norm(x)).reshape(batch, 3, channels, height * width)
        # (b, 1 head, positions, channels) for SDPA; the default scale 1/sqrt(channels) is the released one
        q, k, v = (t.transpose(1, 2).unsqueeze(1) for t in qkv.unbind(1))
        attended = F.scaled_dot_product_attention(q, k, v)
        attended = attended.squeeze(1).transpose(1, 2).reshape(batch, channels, height, width)
        return x + self.proj(attended)


class Downsample(nn.Module):
    """Stride-2 3x3 conv after padding one zero row/column at the bottom/right (asymmetric, as released)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling followed by a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class MiddleBlock(nn.Module):
    """Residual block, (optional) attention, residual block, at the lowest resolution."""

    def __init__(self, channels: int, attention: bool, dropout: float) -> None:
        super().__init__()
        self.block1 = ResidualBlock(channels, channels, dropout)
        self.attention = AttentionBlock(channels) if attention else nn.Identity()
        self.block2 = ResidualBlock(channels, channels, dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.block2(self.attention(self.block1(x)))


class Stage(nn.Module):
    """One resolution level: residual blocks, each optionally followed by attention, then an optional resampler."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_blocks: int,
        attention: bool,
        dropout: float,
        resample: nn.Module | None,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            ResidualBlock(in_channels if i == 0 else out_channels, out_channels, dropout) for i in range(num_blocks)
        )
        self.attentions = nn.ModuleList(AttentionBlock(out_channels) for _ in range(num_blocks if attention else 0))
        self.resample = resample if resample is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        for i, block in enumerate(self.blocks):
            x = block(x)
            if self.attentions:
                x = self.attentions[i](x)
        return self.resample(x)


class Encoder(nn.Module):
    """Images ``(b, image_channels, H, W)`` -> features ``(b, latent_channels, H / 2^(L-1), W / 2^(L-1))``.

    ``stages[i]`` runs at resolution level ``i`` (0 = full resolution) and downsamples except at the last level.
    """

    def __init__(
        self,
        base_channels: int,
        channel_multipliers: Sequence[int],
        num_blocks: int,
        latent_channels: int,
        image_channels: int = 3,
        lowest_level_attention: bool = True,
        middle_attention: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        widths = [base_channels * m for m in channel_multipliers]
        levels = len(widths)
        self.stem = nn.Conv2d(image_channels, base_channels, kernel_size=3, padding=1)
        stages = []
        in_channels = base_channels
        for level, width in enumerate(widths):
            lowest = level == levels - 1
            stages.append(
                Stage(
                    in_channels,
                    width,
                    num_blocks,
                    attention=lowest and lowest_level_attention,
                    dropout=dropout,
                    resample=None if lowest else Downsample(width),
                )
            )
            in_channels = width
        self.stages = nn.ModuleList(stages)
        self.middle = MiddleBlock(in_channels, middle_attention, dropout)
        self.head_norm = group_norm(in_channels)
        self.head_conv = nn.Conv2d(in_channels, latent_channels, kernel_size=3, padding=1)

    def forward(self, images: Tensor) -> Tensor:
        h = self.stem(images)
        for stage in self.stages:
            h = stage(h)
        h = self.middle(h)
        return self.head_conv(F.silu(self.head_norm(h), inplace=not torch.is_grad_enabled()))


class Decoder(nn.Module):
    """Latents ``(b, latent_channels, h, w)`` -> images ``(b, image_channels, h * 2^(L-1), w * 2^(L-1))``.

    ``stages`` are in execution order: ``stages[0]`` is the lowest resolution level, each but the last upsamples.
    """

    def __init__(
        self,
        base_channels: int,
        channel_multipliers: Sequence[int],
        num_blocks: int,
        latent_channels: int,
        image_channels: int = 3,
        lowest_level_attention: bool = True,
        middle_attention: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        widths = [base_channels * m for m in channel_multipliers]
        levels = len(widths)
        in_channels = widths[-1]
        self.stem = nn.Conv2d(latent_channels, in_channels, kernel_size=3, padding=1)
        self.middle = MiddleBlock(in_channels, middle_attention, dropout)
        stages = []
        for level in reversed(range(levels)):
            width = widths[level]
            stages.append(
                Stage(
                    in_channels,
                    width,
                    num_blocks,
                    attention=level == levels - 1 and lowest_level_attention,
                    dropout=dropout,
                    resample=Upsample(width) if level != 0 else None,
                )
            )
            in_channels = width
        self.stages = nn.ModuleList(stages)
        self.head_norm = group_norm(in_channels)
        self.head_conv = nn.Conv2d(in_channels, image_channels, kernel_size=3, padding=1)

    def forward(self, latents: Tensor) -> Tensor:
        h = self.middle(self.stem(latents))
        for stage in self.stages:
            h = stage(h)
        return self.head_conv(F.silu(self.head_norm(h), inplace=not torch.is_grad_enabled()))
