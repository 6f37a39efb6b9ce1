"""varkit data: webdataset shards for both VAR stages, the built-in demo dataset, and streaming DataModules.

* :mod:`varkit.data.shards` — deterministic tar shard writing, URL expansion, ``classes.json``.
* :mod:`varkit.data.pack` — image folder → shards (``varkit data pack``).
* :mod:`varkit.data.demo` — the procedural demo dataset (``varkit data demo``).
* :mod:`varkit.data.streaming` — restorable rank/worker-aware streams, skip counting (plain PyTorch).
* :mod:`varkit.data.images` — image sample decoding for the image (tokenizer) stage.
* :mod:`varkit.data.tokens` — pre-tokenized pyramids: writing, reading, decoding.
* :mod:`varkit.data.modules` — the Lightning DataModules (:class:`WebDataModule`, :class:`TokenDataModule`).
"""

from __future__ import annotations

import importlib
from typing import Any

# Imported on first use so that ``varkit data pack`` and pack/demo worker processes do not pay for lightning.
_EXPORTS = {
    "DataSetupError": "varkit.errors",
    "LogSkippedSamples": "varkit.data.modules",
    "ShardStream": "varkit.data.streaming",
    "ShardWriter": "varkit.data.shards",
    "SkipSample": "varkit.data.streaming",
    "SkipStats": "varkit.data.stats",
    "StreamDataModule": "varkit.data.modules",
    "StreamLoader": "varkit.data.streaming",
    "TokenDataModule": "varkit.data.modules",
    "WebDataModule": "varkit.data.modules",
    "expand_urls": "varkit.data.shards",
    "read_classes": "varkit.data.shards",
    "write_classes": "varkit.data.shards",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'varkit.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
