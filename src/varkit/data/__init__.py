"""varkit data: webdataset shards for both VAR stages, the built-in demo dataset, and streaming DataModules.

* :mod:`varkit.data.shards` — deterministic tar shard writing, URL expansion, ``classes.json``.
* :mod:`varkit.data.pack` — image folder → shards (``varkit data pack``).
* :mod:`varkit.data.demo` — the procedural demo dataset (``varkit data demo``).
* :mod:`varkit.data.streaming` — restorable rank/worker-aware streams, skip counting.
* :mod:`varkit.data.images` — :class:`WebDataModule` for the image (tokenizer) stage.
* :mod:`varkit.data.tokens` — pre-tokenized pyramids and :class:`TokenDataModule` for the transformer stage.
"""

from varkit.data.images import WebDataModule
from varkit.data.shards import ShardWriter, expand_urls, read_classes, write_classes
from varkit.data.stats import SkipStats
from varkit.data.streaming import LogSkippedSamples, ShardStream, SkipSample, StreamDataModule, StreamLoader
from varkit.data.tokens import TokenDataModule

__all__ = [
    "LogSkippedSamples",
    "ShardStream",
    "ShardWriter",
    "SkipSample",
    "SkipStats",
    "StreamDataModule",
    "StreamLoader",
    "TokenDataModule",
    "WebDataModule",
    "expand_urls",
    "read_classes",
    "write_classes",
]
