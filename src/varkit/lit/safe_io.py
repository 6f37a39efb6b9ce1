"""Checkpoint I/O for resuming: Lightning's torch I/O, but loading with ``weights_only=True`` whatever the version.

``Trainer.fit(ckpt_path=...)`` loads through the strategy's :class:`~lightning.fabric.plugins.CheckpointIO` with
torch's *default* ``weights_only``, which was ``False`` before torch 2.6. A ``last.ckpt`` planted in a run folder
could then run code on resume. :class:`SafeCheckpointIO` (the trainer configs install it as a plugin) always loads
weights only and reports a refused or unreadable checkpoint as one sentence (:mod:`varkit.safe_load`).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO

from varkit.errors import ConfigError
from varkit.safe_load import is_refusal, refusal

__all__ = ["SafeCheckpointIO", "safe_checkpoint_load"]


def safe_checkpoint_load(load: Callable[..., dict[str, Any]], path: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Call a Lightning checkpoint loader with ``weights_only=True``; refusals and corrupt files as one sentence."""
    kwargs["weights_only"] = True
    try:
        return load(path, *args, **kwargs)
    except pickle.UnpicklingError as err:
        if is_refusal(err):
            raise refusal(path, "checkpoint to resume from") from None
        raise ConfigError(f"the checkpoint to resume from {path} is not a torch checkpoint") from None
    except (RuntimeError, EOFError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0].split(". ")[0][:160]
        raise ConfigError(
            f"the checkpoint to resume from {path} is unreadable or truncated ({first}); delete it (or set "
            "resume=false) to start over"
        ) from None


class SafeCheckpointIO(TorchCheckpointIO):
    """:class:`TorchCheckpointIO` that never unpickles code (``weights_only=True`` on every load)."""

    def load_checkpoint(
        self, path: Any, map_location: Any = lambda storage, loc: storage, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return safe_checkpoint_load(super().load_checkpoint, path, map_location=map_location)
