"""varkit: Visual AutoRegressive modeling (Tian et al., NeurIPS 2024) — next-scale prediction as a framework.

``import varkit`` registers the built-in components (scale schedules, guidance schedules, quantizers, attention
kernels, training objectives) and imports neither Lightning, Hydra nor Pillow; ``import varkit.evaluation``
registers the feature extractors. Plugins are loaded explicitly with :func:`varkit.plugins.load_plugins` (the CLI
does it for you).
"""

from varkit import (  # noqa: F401  (registers built-ins)
    attention,
    guidance,
    objectives,
    quantizers,
    scales,
)
from varkit.contracts import BlockCausalMask, QuantizerOutput, Scales
from varkit.registry import ATTENTION_KERNELS, CFG_SCHEDULES, QUANTIZERS, REGISTRIES, SCALE_SCHEDULES, Registry

__version__ = "0.1.0"

__all__ = [
    "ATTENTION_KERNELS",
    "CFG_SCHEDULES",
    "QUANTIZERS",
    "REGISTRIES",
    "SCALE_SCHEDULES",
    "BlockCausalMask",
    "QuantizerOutput",
    "Registry",
    "Scales",
    "__version__",
]
