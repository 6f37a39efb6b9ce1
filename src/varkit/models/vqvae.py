"""VAR's multi-scale VQVAE tokenizer (VAR paper, Sec. 3.3 and Sec. 4 "VQVAE tokenizer").

``images -> Encoder -> quant_conv -> multi-scale quantizer -> post_quant_conv -> Decoder -> images``

The quantizer is injected (any registered :class:`~varkit.contracts.MultiScaleQuantizer`, built from the
registry); the scale schedule is fixed at construction and checked against the latent size. Presets are plain
data (:data:`VQVAE_PRESETS`) so that configs and checkpoints only ever hold names and numbers.

Fast inference: ``vae.decoder_to(torch.bfloat16)`` keeps the decoder's weights in bf16 and channels-last
memory, which decodes about 3x faster on CPUs with AMX than float32 (``benchmarks/vqvae.py``); the encoder and
the quantizer are untouched, so token ids do not change.
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from varkit.contracts import InvalidScalesError, MultiScaleQuantizer, QuantizerOutput, Scales
from varkit.models.vqvae_blocks import Decoder, Encoder
from varkit.registry import QUANTIZERS, SCALE_SCHEDULES

__all__ = ["VQVAE", "VQVAE_PRESETS", "build_vqvae", "vqvae_preset"]

logger = logging.getLogger(__name__)


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    height, width = size
    return (int(height), int(width))


class VQVAE(nn.Module):
    """Multi-scale VQVAE: convolutional encoder/decoder around an injected multi-scale quantizer.

    Args:
        quantizer: the multi-scale quantizer (e.g. ``QUANTIZERS.build({"name": "msvq", ...})``); its
            ``code_dim`` is the latent channel count.
        scales: token-map sizes; the last one must equal ``image_size // downsample``.
        image_size: training/inference image size (int or ``(height, width)``).
        base_channels: width of the first level (160 in the released model).
        channel_multipliers: width multiplier per resolution level; ``len - 1`` 2x downsamplings.
        encoder_blocks: residual blocks per level in the encoder (2 released).
        decoder_blocks: residual blocks per level in the decoder (3 released).
        lowest_level_attention: self-attention after every block of the lowest-resolution level.
        middle_attention: self-attention in the middle section.
        dropout: dropout inside the residual blocks.
        image_channels: channels of the images (3).
        latent_channels: optional check: must equal ``quantizer.code_dim``.
    """

    def __init__(
        self,
        quantizer: MultiScaleQuantizer,
        scales: Scales,
        image_size: int | Sequence[int] = 256,
        base_channels: int = 160,
        channel_multipliers: Sequence[int] = (1, 1, 2, 2, 4),
        encoder_blocks: int = 2,
        decoder_blocks: int = 3,
        lowest_level_attention: bool = True,
        middle_attention: bool = True,
        dropout: float = 0.0,
        image_channels: int = 3,
        latent_channels: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(quantizer, nn.Module):
            raise TypeError(f"the quantizer must be an nn.Module, got {type(quantizer).__name__}")
        code_dim = int(quantizer.code_dim)
        if latent_channels is not None and int(latent_channels) != code_dim:
            raise ValueError(f"latent_channels={latent_channels} differs from the quantizer's code_dim={code_dim}")
        if base_channels % 32:
            raise ValueError(f"base_channels must be a multiple of 32 (GroupNorm with 32 groups), got {base_channels}")
        self.image_size = _pair(image_size)
        self.downsample = 2 ** (len(channel_multipliers) - 1)
        self.scales = Scales.of(scales)
        self._validate_scales(self.scales)
        self.latent_channels = code_dim
        self.image_channels = image_channels
        blocks: dict[str, Any] = {
            "base_channels": base_channels,
            "channel_multipliers": tuple(channel_multipliers),
            "latent_channels": code_dim,
            "image_channels": image_channels,
            "lowest_level_attention": lowest_level_attention,
            "middle_attention": middle_attention,
            "dropout": dropout,
        }
        self.encoder = Encoder(num_blocks=encoder_blocks, **blocks)
        self.quant_conv = nn.Conv2d(code_dim, code_dim, kernel_size=3, padding=1)
        self.quantizer = quantizer
        self.post_quant_conv = nn.Conv2d(code_dim, code_dim, kernel_size=3, padding=1)
        self.decoder = Decoder(num_blocks=decoder_blocks, **blocks)
        #: images decoded at a time outside autograd (set by :meth:`decoder_to`; ``None``: the whole batch)
        self.decode_max_batch: int | None = None
        #: plain-data :func:`build_vqvae` arguments (set by the builders; what ``save_pretrained`` stores)
        self.config: dict[str, Any] | None = None

    # -- sizes ---------------------------------------------------------------------------------------------------
    def latent_size(self, image_size: int | Sequence[int] | None = None) -> tuple[int, int]:
        """``(h, w)`` of the latent grid for ``image_size`` (default: the configured one)."""
        height, width = _pair(image_size) if image_size is not None else self.image_size
        if height % self.downsample or width % self.downsample:
            raise ValueError(f"image size {height}x{width} is not divisible by the downsampling {self.downsample}")
        return (height // self.downsample, width // self.downsample)

    def _validate_scales(self, scales: Scales) -> None:
        latent = self.latent_size()
        if scales.last != latent:
            raise InvalidScalesError(
                f"the scale schedule {scales.describe()} ends at {scales.last[0]}x{scales.last[1]}, but images of "
                f"{self.image_size[0]}x{self.image_size[1]} downsampled {self.downsample}x give a "
                f"{latent[0]}x{latent[1]} latent; the last scale must equal the latent size"
            )

    def _scales_for(self, scales: Scales | None) -> Scales:
        return self.scales if scales is None else Scales.of(scales)

    # -- encoding ------------------------------------------------------------------------------------------------
    def encode_latents(self, images: Tensor) -> Tensor:
        """Images in [-1, 1] ``(b, c, H, W)`` -> continuous latents ``(b, code_dim, H/f, W/f)``."""
        return self.quant_conv(self.encoder(images))

    def forward(self, images: Tensor) -> tuple[Tensor, QuantizerOutput]:
        """Training pass: (unclamped reconstruction, quantizer output with loss, indices and code counts)."""
        quantized = self.quantizer(self.encode_latents(images), self.scales)
        return self._decode(quantized.quantized), quantized

    @torch.no_grad()
    def tokenize(self, images: Tensor, scales: Scales | None = None) -> list[Tensor]:
        """Token indices per scale, a list of ``(b, h_k * w_k)`` int64 tensors."""
        return self.quantizer.encode(self.encode_latents(images), self._scales_for(scales))

    # -- decoding ------------------------------------------------------------------------------------------------
    def _decode(self, latents: Tensor) -> Tensor:
        reference = self.post_quant_conv.weight
        latents = latents.to(dtype=reference.dtype)
        if reference.is_contiguous(memory_format=torch.channels_last) and not reference.is_contiguous():
            latents = latents.contiguous(memory_format=torch.channels_last)  # decoder_to(): fast inference layout
        return self.decoder(self.post_quant_conv(latents)).float()

    def decode_latents(self, latents: Tensor) -> Tensor:
        """Accumulated quantized latent ``(b, code_dim, h, w)`` -> images clamped to [-1, 1], float32.

        After :meth:`decoder_to` with ``max_batch``, inference (no autograd) decodes that many images at a time:
        full-resolution activations of a few images stay in cache, which is faster per image and bounds memory.
        """
        step = self.decode_max_batch
        if step and latents.shape[0] > step and not torch.is_grad_enabled():
            return torch.cat([self._decode(part).clamp_(-1.0, 1.0) for part in latents.split(step)])
        return self._decode(latents).clamp_(-1.0, 1.0)

    @torch.no_grad()
    def decode_indices(self, indices: Sequence[Tensor], scales: Scales | None = None) -> Tensor:
        """Images in [-1, 1] from per-scale token indices."""
        return self.decode_latents(self.quantizer.decode(indices, self._scales_for(scales)))

    @torch.no_grad()
    def decode_indices_per_scale(self, indices: Sequence[Tensor], scales: Scales | None = None) -> list[Tensor]:
        """Coarse-to-fine previews: the image decoded after each scale (list of K ``(b, c, H, W)``)."""
        per_scale = self.quantizer.decode_per_scale(indices, self._scales_for(scales))
        return [self.decode_latents(latents) for latents in per_scale]

    @torch.no_grad()
    def reconstruct(self, images: Tensor) -> Tensor:
        """Images -> tokens -> images, clamped to [-1, 1] (what the transformer can at best produce)."""
        latents = self.encode_latents(images)
        return self.decode_latents(self.quantizer.decode(self.quantizer.encode(latents, self.scales), self.scales))

    # -- inference speed -----------------------------------------------------------------------------------------
    def decoder_to(
        self, dtype: torch.dtype = torch.bfloat16, channels_last: bool = True, max_batch: int | None = 2
    ) -> VQVAE:
        """Keep the decoder (and ``post_quant_conv``) in ``dtype`` and channels-last memory for fast decoding.

        Inputs are cast on the way in and images come back as float32. ``max_batch``: images decoded at a time
        outside autograd (``vqvae_f16`` on a 2-core CPU: 1.61 s/image at 16 at once, 1.49 at 2; ``None``: all).
        Meant for inference: train in float32 (with autocast) instead. ``decoder_to(torch.float32,
        channels_last=False, max_batch=None)`` undoes it.
        """
        self.decode_max_batch = max_batch
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        for module in (self.post_quant_conv, self.decoder):
            module.to(dtype=dtype, memory_format=memory_format)  # type: ignore[call-overload]
        return self


#: plain-data presets, the :func:`build_vqvae` arguments: ``tokenizer`` (VQVAE arguments plus the default
#: ``codebook_size``), ``quantizer`` (registry spec; ``codebook_size``/``code_dim`` come from the tokenizer), ``scales``
VQVAE_PRESETS: dict[str, dict[str, Any]] = {
    # the released VAR tokenizer (vae_ch160v4096z32.pth), 256px images, 16x16 latents
    "vqvae_f16": {
        "tokenizer": {
            "image_size": 256,
            "base_channels": 160,
            "channel_multipliers": [1, 1, 2, 2, 4],
            "encoder_blocks": 2,
            "decoder_blocks": 3,
            "lowest_level_attention": True,
            "middle_attention": True,
            "dropout": 0.0,
            "latent_channels": 32,
            "codebook_size": 4096,
        },
        "quantizer": {"name": "msvq", "beta": 0.25, "normalize_codes": False, "phi_ratio": 0.5, "phi_count": 4},
        "scales": {"name": "var_256"},
    },
    # CPU demo: 32px images, 4x downsampling -> 8x8 latents, trains on 2 cores in minutes
    "vqvae_demo": {
        "tokenizer": {
            "image_size": 32,
            "base_channels": 32,
            "channel_multipliers": [1, 2, 2],
            "encoder_blocks": 1,
            "decoder_blocks": 2,
            "lowest_level_attention": False,
            "middle_attention": True,
            "dropout": 0.0,
            "latent_channels": 16,
            "codebook_size": 512,
        },
        "quantizer": {"name": "msvq", "beta": 0.25, "normalize_codes": False, "phi_ratio": 0.5, "phi_count": 4},
        "scales": {"name": "explicit", "sizes": [1, 2, 3, 4, 6, 8]},
    },
    # unit tests: 16px images, 4x downsampling -> 4x4 latents
    "vqvae_tiny": {
        "tokenizer": {
            "image_size": 16,
            "base_channels": 32,
            "channel_multipliers": [1, 1, 2],
            "encoder_blocks": 1,
            "decoder_blocks": 1,
            "lowest_level_attention": True,
            "middle_attention": True,
            "dropout": 0.0,
            "latent_channels": 8,
            "codebook_size": 64,
        },
        "quantizer": {"name": "msvq", "beta": 0.25, "normalize_codes": False, "phi_ratio": 0.5, "phi_count": 4},
        "scales": {"name": "explicit", "sizes": [1, 2, 3, 4]},
    },
}


def build_vqvae(
    tokenizer: Mapping[str, Any],
    quantizer: Mapping[str, Any],
    scales: Scales | Mapping[str, Any] | Sequence[Any],
) -> VQVAE:
    """Build a :class:`VQVAE` from plain config mappings (the ``tokenizer``, ``quantizer``, ``schedule`` groups).

    * ``tokenizer``: :class:`VQVAE` arguments, plus ``codebook_size`` (the tokenizer's vocabulary, used by
      quantizers that take one); an optional ``name`` key is ignored.
    * ``quantizer``: a registry spec (``{"name": "msvq", ...}``). ``code_dim`` and ``codebook_size`` left out or
      None are taken from the tokenizer's ``latent_channels`` / ``codebook_size`` (only if the quantizer takes
      that argument: ``msfsq``'s vocabulary follows from its ``levels``); ``num_scales`` (needed for
      ``phi_count: 0``) is filled from the schedule.
    * ``scales``: a :class:`Scales`, a schedule spec (``{"name": "var_256"}``) or a list of sizes.

    The result's ``config`` holds the resolved arguments as plain data (``build_vqvae(**vae.config)`` rebuilds it).

    >>> vae = build_vqvae(**VQVAE_PRESETS["vqvae_tiny"])
    >>> vae.latent_size(), vae.scales.describe(), vae.quantizer.codebook_size
    ((4, 4), '(1, 2, 3, 4)', 64)
    """
    schedule = SCALE_SCHEDULES.resolve(scales)
    tokenizer_args = {str(k): v for k, v in tokenizer.items() if k != "name"}
    quantizer_spec = {str(k): v for k, v in quantizer.items()}
    if "name" not in quantizer_spec:
        raise ValueError(f"the quantizer config needs a 'name' (one of {', '.join(QUANTIZERS.names())})")
    accepted = set(inspect.signature(QUANTIZERS.get(quantizer_spec["name"])).parameters)
    defaults = {
        "code_dim": tokenizer_args.get("latent_channels"),
        "codebook_size": tokenizer_args.pop("codebook_size", None),
        "num_scales": len(schedule),
    }
    for key, value in defaults.items():
        if key in accepted and quantizer_spec.get(key) is None and value is not None:
            quantizer_spec[key] = value
    for key in ("code_dim", "codebook_size"):
        if key in accepted and key in quantizer_spec and quantizer_spec[key] is None:
            raise ValueError(f"quantizer {quantizer_spec['name']!r} needs {key}: set it in the quantizer or tokenizer")
    if "channel_multipliers" in tokenizer_args:
        tokenizer_args["channel_multipliers"] = tuple(tokenizer_args["channel_multipliers"])
    if isinstance(tokenizer_args.get("image_size"), Sequence):
        tokenizer_args["image_size"] = tuple(tokenizer_args["image_size"])
    built = QUANTIZERS.build(quantizer_spec)
    vae = VQVAE(quantizer=built, scales=schedule, **tokenizer_args)
    vae.config = {
        "tokenizer": _plain(tokenizer_args),
        "quantizer": _plain(quantizer_spec),
        "scales": schedule.as_list(),
    }
    return vae


def _plain(value: Any) -> Any:
    """Config values as plain containers (tuples -> lists, OmegaConf nodes -> dicts/lists)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or (isinstance(value, Sequence) and not isinstance(value, str)):
        return [_plain(v) for v in value]
    return value


def vqvae_preset(name: str, **tokenizer_overrides: Any) -> VQVAE:
    """Build a preset from :data:`VQVAE_PRESETS` (randomly initialised), optionally overriding tokenizer args."""
    if name not in VQVAE_PRESETS:
        raise KeyError(f"unknown VQVAE preset {name!r}; known: {', '.join(sorted(VQVAE_PRESETS))}")
    preset = copy.deepcopy(VQVAE_PRESETS[name])
    preset["tokenizer"].update(tokenizer_overrides)
    return build_vqvae(preset["tokenizer"], preset["quantizer"], preset["scales"])
