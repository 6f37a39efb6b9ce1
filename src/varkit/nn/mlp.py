"""The transformer's position-wise feed-forward network (VAR uses the GPT-2 form: tanh-approximated GELU)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from varkit.nn.cpu_linear import Linear

__all__ = ["MLP"]


class MLP(nn.Module):
    """``fc2(gelu_tanh(fc1(x)))`` followed by dropout; hidden width ``round(width * mlp_ratio)``."""

    def __init__(self, width: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = Linear(width, hidden)
        self.fc2 = Linear(hidden, width)
        self.dropout = float(dropout)

    def forward(self, x: Tensor) -> Tensor:
        out = self.fc2(F.gelu(self.fc1(x), approximate="tanh"))
        return F.dropout(out, self.dropout, self.training) if self.dropout > 0.0 else out
