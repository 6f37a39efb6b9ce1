"""Layer skipping at the finest scales: a sampling speed-up added to varkit through the registry alone.

At the chosen scales only the first ``blocks`` transformer blocks run before the head (an early exit in depth, in
the spirit of CALM / LayerSkip). The finest scale's keys and values are never read again, so skipping blocks
there needs no KV-cache repair; at earlier scales the skipped layers simply cache nothing for those tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor

from varkit.models.generation import ModelRunner, Speedup
from varkit.registry import SAMPLERS

__all__ = ["LayerSkip"]


@SAMPLERS.register("layer_skip")
@dataclass
class LayerSkip(Speedup):
    """Layer skipping: at ``scales`` run only the first ``blocks`` transformer blocks, then the head.

    Args:
        scales: scale indices (negative: from the finest) where blocks are skipped.
        blocks: blocks kept (negative: counted from the last); ``None``: off.
    """

    scales: Sequence[int] = (-1,)
    blocks: int | None = -2
    OFF: ClassVar[dict[str, Any]] = {"blocks": None}

    def run_blocks(self, k: int, x: Tensor, runner: ModelRunner) -> Tensor | None:
        num_scales, depth = runner.model.scales.num_scales, len(runner.blocks)
        if self.blocks is None or k not in {s % num_scales for s in self.scales}:
            return None
        kept = self.blocks % depth if self.blocks < 0 else min(self.blocks, depth)
        return runner.run_blocks(x, 0, max(kept, 1))
