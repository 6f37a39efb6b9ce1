"""One VAR transformer block: adaLN-modulated attention and feed-forward branches (VAR paper, Sec. 4).

``x = x + drop_path(gamma1 * attn(LN(x) * (1 + scale1) + shift1))``
``x = x + drop_path(gamma2 * ffn(LN(x) * (1 + scale2) + shift2))``
"""

from __future__ import annotations

from torch import Tensor, nn

from varkit.contracts import BlockCausalMask
from varkit.nn.adaln import AdaLNModulation, modulated_layer_norm
from varkit.nn.attention import KernelSpec, KVCache, SelfAttention
from varkit.nn.drop_path import DropPath
from varkit.nn.mlp import MLP

__all__ = ["AdaLNBlock"]


class AdaLNBlock(nn.Module):
    """Pre-norm transformer block whose norms are modulated by six class-conditioned vectors."""

    def __init__(
        self,
        width: int,
        num_heads: int,
        cond_dim: int,
        *,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        shared_adaln: bool = False,
        qk_l2_norm: bool = True,
        attention: KernelSpec = "sdpa",
    ) -> None:
        super().__init__()
        self.norm_eps = norm_eps
        self.attention = SelfAttention(
            width,
            num_heads,
            qk_l2_norm=qk_l2_norm,
            attention_dropout=attention_dropout,
            dropout=dropout,
            kernel=attention,
        )
        self.mlp = MLP(width, round(width * mlp_ratio), dropout=dropout)
        self.adaln = AdaLNModulation(cond_dim, width, shared=shared_adaln)
        self.drop_path = DropPath(drop_path)

    def forward(
        self,
        x: Tensor,
        modulation: Tensor,
        *,
        mask: BlockCausalMask | None = None,
        cache: KVCache | None = None,
    ) -> Tensor:
        """``x``: ``(b, n, width)``; ``modulation``: ``(b, 1, 6, width)`` from :meth:`AdaLNModulation.forward`."""
        gamma1, gamma2, scale1, scale2, shift1, shift2 = modulation.unbind(2)
        h = self.attention(modulated_layer_norm(x, scale1, shift1, self.norm_eps), mask=mask, cache=cache)
        x = x + self.drop_path(h * gamma1)
        h = self.mlp(modulated_layer_norm(x, scale2, shift2, self.norm_eps))
        return x + self.drop_path(h * gamma2)
