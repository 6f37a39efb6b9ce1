"""Exact accounting of samples a data stream had to skip (corrupt images, missing keys, unreadable shards).

Skips happen inside DataLoader worker processes; each batch carries the counts accumulated since the previous
batch of that worker, and :class:`varkit.data.streaming.StreamLoader` adds them into one :class:`SkipStats` in the
main process. A LightningModule logs ``loader.skip_stats.total`` as ``data/skipped``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["SkipStats"]


@dataclass
class SkipStats:
    """Counts of samples dropped by a stream.

    ``corrupt``: samples whose payload failed to decode (e.g. a broken JPEG).
    ``missing_keys``: samples lacking the image/tokens or the class entry (e.g. a partial last sample of a
    truncated tar). ``shard_errors``: read errors of whole shards (a truncated or unreadable tar loses the rest of
    that shard; the lost samples cannot be counted, so the error itself is). ``examples``: a few sample keys.
    """

    corrupt: int = 0
    missing_keys: int = 0
    shard_errors: int = 0
    lost: int = 0
    examples: list[str] = field(default_factory=list)

    max_examples = 20

    @property
    def total(self) -> int:
        """Number of samples skipped (shard errors are not samples and are not included)."""
        return self.corrupt + self.missing_keys

    def record(self, kind: str, key: str) -> None:
        """Count one skip of ``kind`` (``corrupt``, ``missing_keys`` or ``shard_errors``) for sample/shard ``key``."""
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.examples) < self.max_examples:
            self.examples.append(f"{kind}: {key}")

    def add(self, other: SkipStats | dict) -> None:
        """Accumulate another count (a :class:`SkipStats` or its ``state_dict``)."""
        other = other if isinstance(other, SkipStats) else SkipStats.from_state_dict(other)
        self.corrupt += other.corrupt
        self.missing_keys += other.missing_keys
        self.shard_errors += other.shard_errors
        self.lost += other.lost
        room = self.max_examples - len(self.examples)
        self.examples.extend(other.examples[: max(room, 0)])

    def take(self) -> SkipStats:
        """Return the counts so far and reset this object to zero (used to ship per-batch deltas)."""
        taken = self.copy()
        self.corrupt = self.missing_keys = self.shard_errors = self.lost = 0
        self.examples = []
        return taken

    def copy(self) -> SkipStats:
        return SkipStats.from_state_dict(self.state_dict())

    def state_dict(self) -> dict:
        return {**asdict(self), "examples": list(self.examples)}

    @classmethod
    def from_state_dict(cls, state: dict) -> SkipStats:
        return cls(
            corrupt=int(state.get("corrupt", 0)),
            missing_keys=int(state.get("missing_keys", 0)),
            shard_errors=int(state.get("shard_errors", 0)),
            lost=int(state.get("lost", 0)),
            examples=list(state.get("examples", [])),
        )
