"""varkit: Visual AutoRegressive modeling (Tian et al., NeurIPS 2024) — next-scale prediction as a framework.

The front door: ``varkit.create_model("var_d16", **overrides)`` and ``varkit.create_tokenizer("vqvae_f16")`` build
the named presets (:data:`MODELS`, :data:`TOKENIZERS`; ``varkit list`` shows them), ``varkit.from_pretrained`` and
``varkit.convert_official`` load weights, ``varkit.sample_images`` samples with a ``varkit.SamplingConfig``.

``import varkit`` registers the built-in components (scale schedules, guidance schedules, quantizers, attention
kernels, sampling speed-ups, training objectives) and imports neither Lightning, Hydra nor Pillow; the model,
checkpoint and sampling names load on first use. ``import varkit.evaluation`` registers the feature extractors.
Plugins are loaded explicitly with :func:`varkit.plugins.load_plugins` (the CLI does it for you).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from varkit import (  # noqa: F401  (registers built-ins)
    attention,
    guidance,
    objectives,
    quantizers,
    sampling,
    scales,
)
from varkit.contracts import BlockCausalMask, QuantizerOutput, Scales
from varkit.registry import (
    ATTENTION_KERNELS,
    CFG_SCHEDULES,
    MODELS,
    OBJECTIVES,
    QUANTIZERS,
    REGISTRIES,
    SAMPLERS,
    SCALE_SCHEDULES,
    TOKENIZERS,
    Registry,
)
from varkit.sampling import SamplingConfig

if TYPE_CHECKING:
    from varkit.checkpoint.io import convert_official, from_pretrained
    from varkit.models.var import VAR, sample_images
    from varkit.models.vqvae import VQVAE

__version__ = "0.1.0"

__all__ = [
    "ATTENTION_KERNELS",
    "CFG_SCHEDULES",
    "MODELS",
    "OBJECTIVES",
    "QUANTIZERS",
    "REGISTRIES",
    "SAMPLERS",
    "SCALE_SCHEDULES",
    "TOKENIZERS",
    "BlockCausalMask",
    "QuantizerOutput",
    "Registry",
    "SamplingConfig",
    "Scales",
    "__version__",
    "convert_official",
    "create_model",
    "create_tokenizer",
    "from_pretrained",
    "sample_images",
]

# loaded on first use: keeps ``import varkit`` to the registries and contracts
_LAZY = {
    "from_pretrained": "varkit.checkpoint.io",
    "convert_official": "varkit.checkpoint.io",
    "sample_images": "varkit.models.var",
}


def create_model(name: str | Mapping[str, Any], /, **overrides: Any) -> VAR:
    """A randomly initialised VAR transformer by preset name, with constructor arguments overridden.

    >>> import varkit
    >>> model = varkit.create_model("var_tiny", depth=1)
    >>> model.depth, model.scales.describe()
    (1, '(1, 2, 3, 4)')
    """
    import varkit.models.presets  # noqa: F401  (registers the built-in presets)

    return MODELS.build(name, **overrides)


def create_tokenizer(name: str | Mapping[str, Any], /, **overrides: Any) -> VQVAE:
    """A randomly initialised multi-scale VQVAE by preset name; ``overrides`` are VQVAE arguments, or
    ``quantizer={...}`` / ``scales=...`` to replace the preset's quantizer spec or scale schedule.

    >>> import varkit
    >>> varkit.create_tokenizer("vqvae_tiny").quantizer.codebook_size
    64
    """
    import varkit.models.presets  # noqa: F401  (registers the built-in presets)

    return TOKENIZERS.build(name, **overrides)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'varkit' has no attribute {name!r}")
