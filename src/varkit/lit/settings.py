"""Settings of both Lightning stages: one style, frozen dataclasses parsed from the config groups users type.

Each ``*Settings`` class lists one config group's keys with their defaults; :func:`parse_settings` builds it from a
config node (unknown keys are one clear :class:`~varkit.errors.ConfigError` listing the known ones) and
:func:`settings_dict` turns it back into the plain dict the checkpoint's hyper-parameters store.

* tokenizer stage (:class:`~varkit.lit.tokenizer.TokenizerModule`): ``loss``, ``gan``, ``optim``, ``codebook``;
* transformer stage (:class:`~varkit.lit.var_module.VARModule`, VAR paper Sec. 4 "Training"): ``optim``,
  ``loss``, ``progressive``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from varkit.errors import ConfigError
from varkit.registry import to_plain

__all__ = [
    "CodebookSettings",
    "GANSettings",
    "LossSettings",
    "OptimSettings",
    "ProgressiveSettings",
    "VARLossSettings",
    "VAROptimSettings",
    "parse_settings",
    "settings_dict",
]

S = TypeVar("S")


def parse_settings(kind: type[S], values: Mapping[str, Any] | None, where: str) -> S:
    """``kind`` from a config node (a mapping or None); lists become tuples where the default is a tuple."""
    given = dict(to_plain(values) or {})
    fields = {f.name: f for f in dataclasses.fields(kind)}  # type: ignore[arg-type]
    unknown = sorted(set(given) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in '{where}'; known keys: {', '.join(sorted(fields))}")
    for key, value in given.items():
        if isinstance(fields[key].default, tuple) and isinstance(value, list):
            given[key] = tuple(value)
    return kind(**given)


def settings_dict(settings: Any) -> dict[str, Any]:
    """The plain dict of a settings object (tuples as lists: hyper-parameters are written to YAML too)."""

    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return {f.name: plain(getattr(settings, f.name)) for f in dataclasses.fields(settings)}


# -- tokenizer stage ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LossSettings:
    """``loss`` config: weights of the autoencoder terms and the perceptual network's local weight files."""

    l1_weight: float = 1.0
    l2_weight: float = 0.0
    quantizer_weight: float = 1.0
    perceptual_weight: float = 1.0
    vgg_weights: str | None = None
    lpips_weights: str | None = None


@dataclass(frozen=True)
class GANSettings:
    """``gan`` config: the optional patch discriminator (hinge loss, VQGAN adaptive weight)."""

    enabled: bool = False
    weight: float = 0.1
    start_step: int = 0
    adaptive_weight: bool = True
    max_adaptive_weight: float = 1.0e4
    discriminator: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OptimSettings:
    """``optim`` config: AdamW for both networks, linear warm-up then cosine decay, gradient-norm clipping."""

    lr: float = 2.0e-4
    discriminator_lr: float | None = None
    betas: tuple[float, float] = (0.5, 0.9)
    weight_decay: float = 0.0
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    grad_clip: float | None = 1.0


@dataclass(frozen=True)
class CodebookSettings:
    """``codebook`` config: usage logging window and dead-code restarts."""

    usage_window: int = 50
    restart: bool = True
    restart_every: int = 50
    restart_until: int | None = None
    dead_threshold: float = 1.0
    pool_batches: int = 2
    restart_noise: float = 0.0


# -- transformer stage --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VAROptimSettings:
    """``optim`` config of the transformer stage; defaults are the reference recipe (VAR ``utils/arg_util.py``:
    tblr 1e-4, twd 0.05, tclip 2, betas (0.9, 0.95), lin0).

    ``batch_size`` is the per-device batch used for the learning-rate scaling rule (``lr`` set: no scaling);
    ``total_steps`` defaults to the trainer's ``max_steps``; ``warmup_steps`` to ``warmup_fraction * total``.
    """

    base_lr: float = 1e-4
    reference_batch: int = 256
    lr: float | None = None
    batch_size: int | None = None
    weight_decay: float = 0.05
    weight_decay_end: float | None = None
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    fused: bool | None = None
    grad_clip: float | None = 2.0
    schedule: str = "lin0"
    total_steps: int | None = None
    warmup_steps: int | None = None
    warmup_fraction: float = 0.02
    warmup_start: float = 0.005
    final_ratio: float = 0.01


@dataclass(frozen=True)
class VARLossSettings:
    """``loss`` config of the transformer stage."""

    label_smoothing: float = 0.0


@dataclass(frozen=True)
class ProgressiveSettings:
    """``progressive`` config: training over a growing number of scales (reference ``pg``/``pg0``/``pgwp``);
    off when ``fraction`` is 0."""

    fraction: float = 0.0
    start_scale: int = 4
    scale_warmup_steps: int = 0
