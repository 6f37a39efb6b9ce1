"""Lightning DataModules over the plain shard streams: images for the tokenizer stage, token pyramids for the
transformer stage, and the callback that logs skipped samples.

The streams themselves (:mod:`varkit.data.streaming`) are plain PyTorch; this module is the only place in
:mod:`varkit.data` that imports Lightning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L

from varkit.data.images import ImageSampleDecoder
from varkit.data.shards import expand_urls
from varkit.data.stats import SkipStats
from varkit.data.streaming import Decoder, ShardStream, StreamLoader, Urls, resolve_topology, stack_collate
from varkit.data.tokens import ScaleSplitCollate, TokenSampleDecoder, read_token_info
from varkit.data.transforms import ImageTransform
from varkit.errors import DataSetupError

__all__ = ["LogSkippedSamples", "StreamDataModule", "TokenDataModule", "WebDataModule"]

logger = logging.getLogger(__name__)


class StreamDataModule(L.LightningDataModule):
    """Common base of the image and token DataModules: builds one train and one val :class:`StreamLoader`.

    Subclasses implement :meth:`make_decoder` (and may override :meth:`make_collate`).
    """

    def __init__(
        self,
        train_urls: Urls | None,
        val_urls: Urls | None = None,
        *,
        batch_size: int = 64,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        shuffle_buffer: int = 1000,
        resampled: bool = False,
        epoch_samples: int | None = None,
        seed: int = 0,
        drop_last: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
        pin_memory: bool = False,
        max_skipped_fraction: float | None = 0.1,
    ) -> None:
        super().__init__()
        self.max_skipped_fraction = max_skipped_fraction
        self.train_urls = train_urls
        self.val_urls = val_urls
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.shuffle_buffer = shuffle_buffer
        self.resampled = resampled
        self.epoch_samples = epoch_samples
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.pin_memory = pin_memory
        self._train: StreamLoader | None = None
        self._val: StreamLoader | None = None

    def make_decoder(self, train: bool) -> Decoder:
        raise NotImplementedError

    def make_collate(self) -> Callable[[list[Any]], Any]:
        return stack_collate

    def _topology(self) -> tuple[int, int]:
        rank, world = self.rank, self.world_size
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            rank = trainer.global_rank if rank is None else rank
            world = trainer.world_size if world is None else world
        return resolve_topology(rank, world)

    def setup(self, stage: str | None = None) -> None:
        """Build the loaders and validate the setup (shard counts, epoch length) before any training starts."""
        rank, world = self._topology()
        if self._train is None and self.train_urls is not None and stage in (None, "fit"):
            batches = None
            if self.epoch_samples:
                batches = max(1, self.epoch_samples // (world * self.batch_size))
            dataset = ShardStream(
                self.train_urls,
                self.make_decoder(train=True),
                batch_size=self.batch_size,
                collate=self.make_collate(),
                shuffle_buffer=self.shuffle_buffer,
                resampled=self.resampled,
                seed=self.seed,  # per-rank/worker streams differ through the reader id mixed into every seed
                rank=rank,
                world_size=world,
                drop_last=self.drop_last,
            )
            self._train = StreamLoader(
                dataset,
                num_workers=self.num_workers,
                batches_per_epoch=batches,
                pin_memory=self.pin_memory,
                max_skipped_fraction=self.max_skipped_fraction,
            )
        if self._val is None and self.val_urls is not None and stage in (None, "fit", "validate"):
            dataset = ShardStream(
                self.val_urls,
                self.make_decoder(train=False),
                batch_size=self.val_batch_size,
                collate=self.make_collate(),
                rank=rank,
                world_size=world,
            )
            # validation keeps going with fewer workers when its (usually few) shards cannot feed them all;
            # fewer shards than ranks still fails in check_readers, with its explanation
            workers = self.num_workers
            if world <= len(dataset.urls) < world * max(workers, 1):
                workers = len(dataset.urls) // world
                logger.info("validation: %d shards for %d ranks: using %d workers", len(dataset.urls), world, workers)
            self._val = StreamLoader(
                dataset,
                num_workers=workers,
                pin_memory=self.pin_memory,
                rewind=True,
                max_skipped_fraction=self.max_skipped_fraction,
            )

    def train_dataloader(self) -> StreamLoader:
        if self._train is None:
            self.setup("fit")
        if self._train is None:
            raise DataSetupError("no train_urls were given")
        return self._train

    def val_dataloader(self) -> StreamLoader:
        if self._val is None:
            self.setup("validate")
        if self._val is None:
            raise DataSetupError("no val_urls were given")
        return self._val

    @property
    def skip_stats(self) -> SkipStats:
        """Samples skipped so far by the training stream (log ``skip_stats.total`` as ``data/skipped``)."""
        return self._train.skip_stats if self._train is not None else SkipStats()


class LogSkippedSamples(L.Callback):
    """Logs the training stream's skips per reason (``data/skipped``, ``data/skipped_corrupt``,
    ``data/skipped_incomplete``, ``data/shard_errors``) after every training batch, and warns once per new kind
    of skip and at the end of training with the totals (on by default: ``conf/callbacks/default.yaml``)."""

    def __init__(self) -> None:
        self._warned: dict[str, int] = {}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if not isinstance(datamodule, StreamDataModule):
            return
        stats = datamodule.skip_stats
        counts = {"corrupt": stats.corrupt, "incomplete": stats.missing_keys, "shard_errors": stats.shard_errors}
        pl_module.log("data/skipped", float(stats.total), on_step=True, rank_zero_only=False)
        for reason, count in counts.items():
            name = "data/shard_errors" if reason == "shard_errors" else f"data/skipped_{reason}"
            pl_module.log(name, float(count), on_step=True, rank_zero_only=False)
            if count and not self._warned.get(reason) and trainer.is_global_zero:
                logger.warning(
                    "data: skipping %s samples/shards (%d so far), e.g. %s", reason, count, stats.examples[:2]
                )
            self._warned[reason] = count

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if isinstance(datamodule, StreamDataModule) and trainer.is_global_zero:
            stats = datamodule.skip_stats
            if stats.total or stats.shard_errors:
                logger.warning(
                    "data: skipped %d samples in this run (%d corrupt, %d incomplete) and met %d unreadable shard(s)",
                    stats.total,
                    stats.corrupt,
                    stats.missing_keys,
                    stats.shard_errors,
                )


class WebDataModule(StreamDataModule):
    """LightningDataModule for the image stage (tokenizer training, or on-the-fly tokenisation).

    Args:
        train_urls, val_urls: shard specifications — brace patterns, directories, paths, ``pipe:`` commands, lists.
        image_size: output resolution (square).
        mid_reso: resize the shorter side to ``image_size * mid_reso`` before cropping (VAR: 1.125).
        hflip: random horizontal flips for training.
        batch_size, val_batch_size, num_workers, shuffle_buffer, resampled, epoch_samples, seed, drop_last, rank,
        world_size, pin_memory: see :class:`StreamDataModule`. ``epoch_samples`` counts
        samples over all ranks; each rank yields ``epoch_samples // (world_size * batch_size)`` batches per epoch.

    Example::

        dm = WebDataModule("data/demo/train", "data/demo/val", image_size=32, batch_size=64)
        dm.setup("fit")
        images, labels = next(iter(dm.train_dataloader()))
    """

    def __init__(
        self,
        train_urls: Urls | None,
        val_urls: Urls | None = None,
        *,
        image_size: int = 256,
        mid_reso: float = 1.125,
        hflip: bool = False,
        **stream_options: Any,
    ) -> None:
        super().__init__(train_urls, val_urls, **stream_options)
        self.image_size = image_size
        self.mid_reso = mid_reso
        self.hflip = hflip

    def make_decoder(self, train: bool) -> Decoder:
        transform = ImageTransform(self.image_size, train=train, mid_reso=self.mid_reso, hflip=self.hflip)
        return ImageSampleDecoder(transform)


class TokenDataModule(StreamDataModule):
    """LightningDataModule for the transformer stage, reading token shards written by :func:`write_token_shards`.

    Batches are ``(indices, labels)``: ``indices`` is flat ``(b, L)`` int64 (``per_scale=False``) or the per-scale
    list ``[(b, h_k * w_k), ...]``; ``labels`` is int64 ``(b,)``. ``token_info`` is the ``tokens.json`` content
    (read from the folder of the first train shard when omitted). Other arguments as in :class:`WebDataModule`.
    """

    def __init__(
        self,
        train_urls: Urls | None,
        val_urls: Urls | None = None,
        *,
        hflip: bool = False,
        per_scale: bool = False,
        token_info: dict[str, Any] | str | Path | None = None,
        **stream_options: Any,
    ) -> None:
        super().__init__(train_urls, val_urls, **stream_options)
        self.hflip = hflip
        self.per_scale = per_scale
        self._token_info = token_info

    @property
    def token_info(self) -> dict[str, Any]:
        if not isinstance(self._token_info, dict):
            source = self._token_info
            if source is None:
                urls = expand_urls(self.train_urls if self.train_urls is not None else self.val_urls)  # type: ignore[arg-type]
                if not urls:
                    raise DataSetupError(f"no shards found for {self.train_urls!r}: the shard list is empty")
                source = Path(urls[0].split(" ")[-1]).parent
            self._token_info = read_token_info(source)
        return self._token_info

    @property
    def scales(self) -> list[tuple[int, int]]:
        return [(int(h), int(w)) for h, w in self.token_info["scales"]]

    def make_decoder(self, train: bool) -> Decoder:
        total = sum(h * w for h, w in self.scales)
        size = self.token_info.get("codebook_size")
        return TokenSampleDecoder(total, hflip=self.hflip and train, codebook_size=int(size) if size else None)

    def make_collate(self) -> Callable[[list[Any]], Any]:
        return ScaleSplitCollate(self.scales) if self.per_scale else stack_collate
