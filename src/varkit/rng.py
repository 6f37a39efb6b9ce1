"""Seed arithmetic shared by the data streams and the training modules."""

from __future__ import annotations

import numpy as np

__all__ = ["mix_seed"]


def mix_seed(*parts: int) -> int:
    """Combine non-negative integers into one 63-bit seed (stable across processes and Python versions)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))
