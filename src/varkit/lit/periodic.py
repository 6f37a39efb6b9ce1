"""A callback base for work done every N optimiser steps and/or when training ends (once per step at most)."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

__all__ = ["PeriodicCallback", "is_rank_zero"]


def is_rank_zero() -> bool:
    """Whether this process is global rank 0 (the one that writes files and logs)."""
    return rank_zero_only.rank == 0


class PeriodicCallback(L.Callback):
    """Calls :meth:`run` every ``every_n_steps`` optimiser steps (0: never periodically) and, with ``at_end``,
    when training ends; never twice for the same ``global_step`` (gradient accumulation, end right after a period).

    :meth:`run` is called on rank 0 only, unless the model is sharded (FSDP2): every forward then all-gathers its
    weights, a collective, so every rank calls :meth:`run` and it must write and log on rank 0 only
    (:func:`is_rank_zero`).
    """

    def __init__(self, every_n_steps: int, at_end: bool) -> None:
        self.every_n_steps = int(every_n_steps)
        self.at_end = bool(at_end)
        self._last_step = -1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self._trigger(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_end and trainer.global_step != self._last_step:
            self._trigger(trainer, pl_module)

    def _trigger(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from varkit.lit.fsdp import is_sharded

        self._last_step = trainer.global_step
        if is_rank_zero() or is_sharded(pl_module):
            self.run(trainer, pl_module)

    def run(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        raise NotImplementedError
