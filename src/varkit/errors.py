"""User-facing error types shared by every layer (no third-party imports).

The CLI turns these into one sentence and exit code 2; anything else keeps its traceback (a bug).
"""

from __future__ import annotations

__all__ = ["ConfigError", "DataSetupError", "UnsafeCheckpointError"]


class ConfigError(ValueError):
    """A configuration that cannot work; its message is shown to the user as is, without a traceback."""


class DataSetupError(ValueError):
    """A data setup that cannot work (no shards, too few shards for the readers, ...); its message is one sentence
    meant for the user, raised before training starts."""


class UnsafeCheckpointError(ConfigError):
    """A checkpoint that would need unpickling arbitrary Python objects (possibly code) to load: refused."""
