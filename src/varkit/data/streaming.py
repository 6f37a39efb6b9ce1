"""Restorable, rank- and worker-aware streams over webdataset tar shards (shared by the image and token stages).

Design (why it looks like this):

* Each reader — one DataLoader worker on one rank — reads its own sequence of raw samples. In finite mode the
  shard list is shuffled per epoch with a seed common to all ranks and split by node, then by worker (the
  semantics of ``wds.split_by_node`` / ``wds.split_by_worker``, with rank and world size passed explicitly so
  they can be tested without a process group): every readable sample arrives exactly once per epoch. In
  resampled mode every reader draws shards with replacement from ``wds.ResampledShards(urls, seed=...,
  deterministic=True)`` seeded by (seed, epoch, reader) — an infinite, reproducible stream that never runs dry
  on any rank, cut into epochs of a fixed number of batches (``with_epoch``) so all ranks step equally.
* Raw samples (still bytes) pass a seeded shuffle buffer, then get decoded. Augmentation randomness comes from a
  generator seeded by (seed, epoch, reader, position), so any suffix of the stream can be reproduced by skipping
  raw samples *without decoding them*.
* The position of a stream is, per worker, the number of raw samples it has consumed. Batches carry that
  position and the skip counts since the previous batch back to :class:`StreamLoader`, which keeps the loader
  state (``state_dict`` / ``load_state_dict``, the hook Lightning uses to restore mid-epoch position) and an exact
  :class:`~varkit.data.stats.SkipStats`. A restored loader rotates worker roles so that round-robin batch order
  continues exactly where the interrupted run stopped.
"""

from __future__ import annotations

import logging
import os
import random
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from varkit.data.shards import expand_urls, indexed_samples, truncation
from varkit.data.stats import SkipStats
from varkit.errors import DataSetupError
from varkit.rng import mix_seed

__all__ = ["ShardStream", "SkipSample", "StreamLoader", "resolve_topology", "stack_collate", "watch_shards"]

logger = logging.getLogger(__name__)

Urls = str | Path | Sequence[str | Path]
#: skips below this count never stop a run (a few bad samples in a small shard are not a broken data set)
MIN_SKIPS_TO_STOP = 16
Decoder = Callable[[dict[str, Any], np.random.Generator], tuple[Any, int]]


class SkipSample(Exception):
    """Raised by a decoder for a sample that must be skipped; ``kind`` is a :class:`SkipStats` field name."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def resolve_topology(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Rank and world size: explicit values win, then ``RANK`` / ``WORLD_SIZE`` environment variables, then 0/1."""
    world = world_size if world_size is not None else int(os.environ.get("WORLD_SIZE", "1"))
    rank = rank if rank is not None else int(os.environ.get("RANK", "0"))
    if not 0 <= rank < world:
        raise DataSetupError(f"rank {rank} is outside world size {world}")
    return rank, world


def stack_collate(items: list[torch.Tensor]) -> torch.Tensor:
    """Stack CPU tensors into a batch (numpy's single-threaded copy: torch's threaded one stalls on busy CPUs)."""
    return torch.from_numpy(np.stack([item.numpy() for item in items]))


def watch_shards(
    samples: Iterator[dict], stats: SkipStats, opened: Sequence[str] = (), reader_errors: Sequence[str] = ()
) -> Iterator[dict]:
    """Pass raw samples through, checking each shard when the stream leaves it: a shard that does not end like a
    complete tar, or holds fewer samples than its folder index lists, is counted (``shard_errors``, and ``lost``
    when the index says how many samples are gone) and logged with the count — tar readers stop silently at a
    cut on a header boundary, and mid-member they lose the rest of the shard with one read error.

    ``opened``: the URLs in the order the reader opened them (a list the shard source appends to), so that shards
    that yielded no sample at all are checked too. ``reader_errors``: the URLs (``opened[-1]`` at the time) the tar
    reader's error handler reported (and counted in ``stats`` itself), so a damaged shard is counted once.
    """
    counts: dict[str, int] = {}
    done = 0
    reported = reader_errors if isinstance(reader_errors, list) else list(reader_errors)

    def finish(url: str) -> None:
        count = counts.pop(url, 0)
        problem = truncation(url)
        expected = indexed_samples(url)
        lost = max(expected - count, 0) if expected is not None else 0
        if problem is not None or lost:
            if url in reported:  # the tar reader reported (and counted) this shard already
                reported.remove(url)
            else:
                stats.record("shard_errors", url)
            stats.lost += lost
            how_many = (
                f"{lost} of its {expected} samples were lost"
                if expected is not None
                else "the samples after the cut are lost (no shards.json index to count them)"
            )
            logger.warning("shard %s is %s: %s", url, problem or "incomplete", how_many)

    current: str | None = None
    for sample in samples:
        url = str(sample.get("__url__", "?"))
        if url != current:
            if current is not None:
                finish(current)
            while done < len(opened) and opened[done] != url:  # opened since, but gave no sample
                finish(opened[done])
                done += 1
            done += 1  # this shard's own entry
            current = url
        counts[url] = counts.get(url, 0) + 1
        yield sample
    if current is not None:
        finish(current)
    for url in opened[done:]:
        finish(url)


def _shuffled(samples: Iterator[dict], buffer_size: int, rng: random.Random) -> Iterator[dict]:
    """Seeded buffer shuffle of a stream (the classic webdataset scheme, with an explicit generator)."""
    buffer: list[dict] = []
    for sample in samples:
        buffer.append(sample)
        if len(buffer) >= buffer_size:
            index = rng.randrange(len(buffer))
            buffer[index], buffer[-1] = buffer[-1], buffer[index]
            yield buffer.pop()
    rng.shuffle(buffer)
    yield from buffer


class ShardStream(IterableDataset):
    """Iterable of ``(inputs, labels, meta)`` batches read from tar shards by one rank (see module docstring).

    Args:
        urls: shard specification (see :func:`varkit.data.shards.expand_urls`).
        decode: ``(sample dict, numpy Generator) -> (input tensor, label)``; raises :class:`SkipSample` or any
            exception for a bad sample (counted, then skipped).
        batch_size: samples per batch.
        collate: list of inputs → batched inputs (default ``torch.stack``).
        shuffle_buffer: size of the raw-sample shuffle buffer (0/1: no shuffling; shard order is then fixed too).
        resampled: draw shards with replacement forever instead of one pass per epoch.
        seed: base seed; the same seed reproduces the same stream.
        rank, world_size: this process's place among data-parallel ranks.
        drop_last: drop a final partial batch of a finite stream.
    """

    def __init__(
        self,
        urls: Urls,
        decode: Decoder,
        *,
        batch_size: int,
        collate: Callable[[list[Any]], Any] = stack_collate,
        shuffle_buffer: int = 0,
        resampled: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> None:
        super().__init__()
        self.urls = expand_urls(urls)
        if not self.urls:
            raise DataSetupError(f"no shards found for {urls!r}: the shard list is empty")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.decode = decode
        self.batch_size = batch_size
        self.collate = collate
        self.shuffle_buffer = shuffle_buffer
        self.resampled = resampled
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.drop_last = drop_last
        # Set by StreamLoader before each pass.
        self.epoch = 0
        self.start_positions: dict[int, int] = {}
        self.worker_offset = 0

    def check_readers(self, num_workers: int) -> None:
        """Fail with one sentence if a finite stream cannot give every reader at least one shard."""
        readers = self.world_size * max(num_workers, 1)
        if not self.resampled and len(self.urls) < readers:
            raise DataSetupError(
                f"{len(self.urls)} shards cannot feed {self.world_size} ranks × {max(num_workers, 1)} workers = "
                f"{readers} readers; write more, smaller shards (varkit data pack --max-count), lower num_workers, "
                "or use resampled=True"
            )

    def _shard_sources(self, worker: int, num_workers: int) -> Iterator[dict[str, str]]:
        if self.resampled:
            import webdataset as wds

            reader = self.rank * num_workers + worker
            shards = wds.ResampledShards(self.urls, seed=self.seed, worker_seed=lambda: reader, deterministic=True)
            shards.epoch = self.epoch - 1  # ResampledShards increments before seeding
            yield from shards
            return
        order = list(self.urls)
        if self.shuffle_buffer > 1:
            random.Random(mix_seed(self.seed, self.epoch, 1)).shuffle(order)  # same order on every rank
        for url in order[self.rank :: self.world_size][worker::num_workers]:  # split_by_node, then by worker
            yield {"url": url}

    def __iter__(self) -> Iterator[tuple[Any, torch.Tensor | None, dict]]:
        import webdataset as wds

        info = get_worker_info()
        torch_worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        worker = (torch_worker + self.worker_offset) % num_workers
        reader = self.rank * num_workers + worker
        pending = SkipStats()

        reader_errors: list[str] = []
        errored: set[int] = set()

        def on_shard_error(error: Exception) -> bool:
            # webdataset reports one broken tar twice (inner and outer iterator): count each opened shard once
            if len(opened) in errored:
                return True
            errored.add(len(opened))
            reader_errors.append(opened[-1] if opened else "?")
            pending.record("shard_errors", str(error)[:300])
            logger.warning("shard read error, continuing with the next shard: %s", str(error)[:300])
            failed_in_a_row[0] += 1
            if self.resampled and failed_in_a_row[0] > 2 * len(self.urls) + 8:
                # a resampled stream never ends: without this, unreadable shards would be drawn forever
                raise DataSetupError(
                    f"{failed_in_a_row[0]} shards in a row were unreadable (e.g. {opened[-1] if opened else '?'}): "
                    "check the shard files"
                )
            return True

        failed_in_a_row = [0]

        opened: list[str] = []

        def sources() -> Iterator[dict[str, str]]:
            for source in self._shard_sources(worker, num_workers):
                opened.append(source["url"])
                yield source

        samples: Iterator[dict] = watch_shards(
            iter(wds.DataPipeline(sources, wds.tarfile_to_samples(handler=on_shard_error))),
            pending,
            opened,
            reader_errors,
        )
        if self.shuffle_buffer > 1:
            samples = _shuffled(samples, self.shuffle_buffer, random.Random(mix_seed(self.seed, self.epoch, reader, 2)))
        start = self.start_positions.get(worker, 0)
        position = 0
        inputs: list[Any] = []
        labels: list[int] = []
        for sample in samples:
            failed_in_a_row[0] = 0
            position += 1
            if position <= start:
                if position == start:
                    pending.take()  # errors met while replaying were counted before the interruption
                continue
            key = f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"
            rng = np.random.default_rng([self.seed, self.epoch, reader, position])
            try:
                item, label = self.decode(sample, rng)
            except SkipSample as skip:
                pending.record(skip.kind, key)
                logger.debug("skipping %s: %s", key, skip)
                continue
            except Exception as error:
                pending.record("corrupt", key)
                logger.debug("skipping %s: %s", key, error)
                continue
            inputs.append(item)
            labels.append(label)
            if len(inputs) == self.batch_size:
                yield self._batch(inputs, labels, worker, position, pending)
                inputs, labels = [], []
        if inputs and not self.drop_last:
            yield self._batch(inputs, labels, worker, position, pending)
        else:
            yield None, None, {"worker": worker, "position": position, "skipped": pending.take().state_dict()}

    def _batch(self, inputs: list, labels: list[int], worker: int, position: int, pending: SkipStats) -> tuple:
        meta = {"worker": worker, "position": position, "skipped": pending.take().state_dict()}
        return self.collate(inputs), torch.tensor(labels, dtype=torch.int64), meta


class StreamLoader:
    """The DataLoader handed to Lightning: iterates ``(inputs, labels)`` and can save/restore its position.

    Args:
        dataset: the :class:`ShardStream` to read.
        num_workers: DataLoader worker processes (each is one reader).
        batches_per_epoch: cut the stream into epochs of this many batches (``with_epoch``; required for
            resampled streams). Giving it also gives the loader a ``len``.
        prefetched_batches: batches the consumer fetches ahead of the one it is working on; ``state_dict``
            excludes them. ``None`` follows Lightning's rule (one batch ahead when the loader has no length).
        pin_memory: as in ``torch.utils.data.DataLoader``.
        rewind: start every iteration from the beginning of the stream (validation: a run cut short by
            ``limit_val_batches`` must not make the next validation run see different samples, or metrics logged
            at different steps would not be comparable). Training streams continue where they stopped.
        max_skipped_fraction: stop with a :class:`DataSetupError` once more than this fraction of the samples read
            had to be skipped (counted from :data:`MIN_SKIPS_TO_STOP` skips on; ``None``: never stop).

    A pass that yields no batch at all (every shard unreadable, every sample skipped, fewer samples than one
    batch) is a :class:`DataSetupError` too: Lightning would otherwise start epoch after empty epoch forever.
    """

    def __init__(
        self,
        dataset: ShardStream,
        *,
        num_workers: int = 0,
        batches_per_epoch: int | None = None,
        prefetched_batches: int | None = None,
        pin_memory: bool = False,
        rewind: bool = False,
        max_skipped_fraction: float | None = 0.1,
    ) -> None:
        dataset.check_readers(num_workers)
        if max_skipped_fraction is not None and not 0.0 <= max_skipped_fraction <= 1.0:
            raise DataSetupError(f"max_skipped_fraction={max_skipped_fraction!r} must lie in [0, 1] (or be null)")
        self.max_skipped_fraction = max_skipped_fraction
        if dataset.resampled and not batches_per_epoch:
            raise DataSetupError("a resampled stream is infinite: give batches_per_epoch (the epoch length)")
        # not called ``dataset``: Lightning inspects ``loader.dataset`` and would warn about IterableDataset lengths
        self.stream = dataset
        self.num_workers = num_workers
        self.batches_per_epoch = batches_per_epoch
        self.prefetched_batches = prefetched_batches
        self.pin_memory = pin_memory
        self.rewind = rewind
        self.skip_stats = SkipStats()
        self.epoch = 0
        self._batches = 0
        self._positions: dict[int, int] = {}
        self._epoch_finished = False
        self._history: deque[dict] = deque(maxlen=8)

    def __len__(self) -> int:
        if not self.batches_per_epoch:
            raise TypeError("this stream has no fixed length (give batches_per_epoch)")
        return self.batches_per_epoch

    def _snapshot(self) -> dict:
        return {
            "epoch": self.epoch,
            "batches": self._batches,
            "positions": dict(self._positions),
            "epoch_finished": self._epoch_finished,
            "num_workers": self.num_workers,
            "skip_stats": self.skip_stats.state_dict(),
        }

    def __iter__(self) -> Iterator[tuple[Any, torch.Tensor]]:
        if self.rewind:
            self.epoch, self._batches, self._positions, self._epoch_finished = 0, 0, {}, False
        elif self._epoch_finished or (self.batches_per_epoch and self._batches >= self.batches_per_epoch):
            self.epoch += 1
            self._batches = 0
            self._positions = {}
            self._epoch_finished = False
        self.stream.epoch = self.epoch
        self.stream.start_positions = dict(self._positions)
        self.stream.worker_offset = self._batches % max(self.num_workers, 1)
        self._history.clear()
        self._history.append(self._snapshot())
        return self._generate()

    def _generate(self) -> Iterator[tuple[Any, torch.Tensor]]:
        loader = DataLoader(
            self.stream,
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=False,
        )
        fresh = not any(self._positions.values())
        produced = 0
        for inputs, labels, meta in loader:
            self.skip_stats.add(meta["skipped"])
            self._positions[meta["worker"]] = meta["position"]
            self._check_skips()
            if inputs is None:
                continue
            self._batches += 1
            produced += 1
            self._history.append(self._snapshot())
            yield inputs, labels
            if self.batches_per_epoch and self._batches >= self.batches_per_epoch:
                break
        if fresh and not produced:
            stats = self.skip_stats
            raise DataSetupError(
                f"a full pass over the {len(self.stream.urls)} shard(s) starting with {self.stream.urls[0]} gave no "
                f"batch of {self.stream.batch_size} samples ({sum(self._positions.values())} samples read; skipped: "
                f"{stats.corrupt} corrupt, {stats.missing_keys} incomplete, {stats.shard_errors} unreadable shard(s))"
            )
        self._epoch_finished = True

    def _check_skips(self) -> None:
        stats, limit = self.skip_stats, self.max_skipped_fraction
        skipped = stats.total + stats.lost
        if limit is None or skipped < MIN_SKIPS_TO_STOP:
            return
        read = skipped + self._batches * self.stream.batch_size
        if skipped > limit * read:
            examples = "; ".join(stats.examples[:3])
            raise DataSetupError(
                f"{skipped} of the last ~{read} samples were skipped or lost ({stats.corrupt} corrupt, "
                f"{stats.missing_keys} incomplete, {stats.lost} lost in {stats.shard_errors} damaged shard(s)), "
                f"more than "
                f"data.max_skipped_fraction={limit}: fix the shards or raise the limit (e.g. {examples})"
            )

    def state_dict(self) -> dict:
        """Position after the last batch the consumer has *used* (prefetched batches are excluded)."""
        if self._epoch_finished:
            return self._snapshot()
        ahead = self.prefetched_batches
        if ahead is None:
            ahead = 0 if self.batches_per_epoch else 1
        return dict(self._history[max(len(self._history) - 1 - ahead, 0)])

    def load_state_dict(self, state: dict) -> None:
        if state["num_workers"] != self.num_workers:
            raise DataSetupError(
                f"the saved data position was recorded with num_workers={state['num_workers']}; resume with the "
                f"same number (got {self.num_workers}) to continue the stream exactly"
            )
        self.epoch = int(state["epoch"])
        self._batches = int(state["batches"])
        self._positions = {int(k): int(v) for k, v in state["positions"].items()}
        self._epoch_finished = bool(state["epoch_finished"])
        self.skip_stats = SkipStats.from_state_dict(state["skip_stats"])
        self._history.clear()
