"""FLOP estimates of a VAR transformer step, for throughput and MFU logging."""

from __future__ import annotations

from torch import nn

from varkit.models.var import VAR

__all__ = ["training_flops_per_sample"]


def training_flops_per_sample(model: VAR, length: int | None = None) -> float:
    """Approximate training FLOPs per sample (forward + backward = 3x forward) of a teacher-forced step.

    Counts the per-token matrix multiplications (attention projections, MLP, head, word embedding) and the
    attention scores/values over the dense ``length x length`` block-causal mask; the per-sample adaLN
    projections are negligible and left out.
    """
    length = model.scales.total_tokens if length is None else length
    per_token = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and "adaln" not in name and "head_norm" not in name:
            per_token += module.in_features * module.out_features
    forward = 2.0 * per_token * length + 4.0 * model.depth * length * length * model.width
    return 3.0 * forward
