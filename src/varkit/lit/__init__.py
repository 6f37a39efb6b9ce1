"""Lightning systems and callbacks of both VAR stages (thin shells around the plain-torch models)."""

from varkit.lit.tokenizer import TokenizerModule
from varkit.lit.tokenizer_callbacks import ReconstructionGrid
from varkit.lit.var_callbacks import EMA, SampleGrid, Throughput
from varkit.lit.var_module import VARModule

__all__ = ["EMA", "ReconstructionGrid", "SampleGrid", "Throughput", "TokenizerModule", "VARModule"]
