"""Reusable transformer layers of VAR: adaptive layer norm, MLP, drop-path, embeddings, attention with KV cache."""

from varkit.nn.adaln import AdaLNModulation, HeadAdaLN, SharedAdaLN, modulated_layer_norm
from varkit.nn.attention import KVCache, SelfAttention
from varkit.nn.block import AdaLNBlock
from varkit.nn.drop_path import DropPath, drop_path
from varkit.nn.embeddings import ScalePositionEmbedding
from varkit.nn.mlp import MLP

__all__ = [
    "MLP",
    "AdaLNBlock",
    "AdaLNModulation",
    "DropPath",
    "HeadAdaLN",
    "KVCache",
    "ScalePositionEmbedding",
    "SelfAttention",
    "SharedAdaLN",
    "drop_path",
    "modulated_layer_norm",
]
