"""Sampling as a component: one spec (:class:`SamplingConfig`) and registered training-free speed-ups.

``import varkit.sampling`` registers the built-in speed-ups in :data:`varkit.registry.SAMPLERS`
(``token_pruning``, ``guidance_cutoff``, ``kv_budget``, ``draft_refine``, ``early_stop``); the sampler itself is
:meth:`varkit.models.var.VAR.generate` and its hook points :class:`varkit.models.generation.Speedup`.
"""

from varkit.models.generation import EditConstraint, Speedup
from varkit.sampling import speedups  # noqa: F401  (registers the built-in speed-ups)
from varkit.sampling.spec import CONVENTIONS, SamplingConfig

__all__ = ["CONVENTIONS", "EditConstraint", "SamplingConfig", "Speedup"]
