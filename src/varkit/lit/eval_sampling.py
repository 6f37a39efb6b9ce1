"""Distributed, resumable sampling for ``varkit eval`` through Lightning's ``Trainer.predict``.

The VAR paper's FID/IS (Tian et al. 2024, §5) are measured on 50 images per class (50k for ImageNet), a multi-GPU
job at paper scale. The plan of chunks (:func:`varkit.evaluation.samples.plan_chunks`: fixed-size chunks of the
label list, each with a seed derived from the run's seed and the chunk's index) is fixed before any process
starts; rank ``r`` of ``w`` owns chunks ``r, r + w, ...`` of the plan and samples those of them that have no file
yet (a static partition: ranks that look at the directory at slightly different times still never sample a chunk
twice or leave one out). Chunks are written atomically to
``<output_dir>/shares/`` by the rank that samples them, so the images never depend on the number of processes and a
killed run resumes by sampling only the missing chunks. Any Lightning strategy that runs ``predict`` works:
``trainer=ddp`` (GPUs of a node, several nodes with ``trainer.num_nodes`` under a cluster launcher), ``trainer=ddp_cpu``
(two CPU processes). On several nodes, ``shares/`` must be on a file system all nodes see.

Nothing is gathered over the network: after a barrier, rank 0 reads the chunk files and merges them in order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from varkit.evaluation.samples import (
    SampleChunk,
    chunk_path,
    generate_share,
    missing_chunks,
    sample_chunk,
    write_chunk,
)
from varkit.models.var import VAR

__all__ = ["ChunkSampler", "sample_missing_chunks"]

logger = logging.getLogger(__name__)


def _first(items: list[int]) -> int:
    return items[0]


class ChunkSampler(L.LightningModule):
    """``predict_step`` samples one chunk (its index is the batch) and writes it to ``directory``.

    ``chunks``: the whole plan; each rank owns every ``world_size``-th chunk from its rank on and samples the ones
    without a file in ``directory`` (no Lightning distributed sampler: it would pad ranks with repeated chunks).
    ``warmup``: one untimed, discarded
    batch before the first chunk of each rank, so one-off start-up costs stay out of the per-chunk seconds.
    """

    def __init__(
        self,
        var: VAR,
        vqvae: torch.nn.Module,
        chunks: Sequence[SampleChunk],
        *,
        directory: str | Path,
        seed: int,
        batch_size: int,
        sampling: Mapping[str, Any],
        warmup: bool = True,
    ) -> None:
        super().__init__()
        self.var = var
        self.vqvae = vqvae
        self.chunks = {chunk.index: chunk for chunk in chunks}
        self.directory = Path(directory)
        self.seed = seed
        self.batch_size = batch_size
        self.sampling = dict(sampling)
        self.warmup = warmup
        self.sampled: list[int] = []

    def predict_dataloader(self) -> DataLoader:
        rank, world = self.trainer.global_rank, self.trainer.world_size
        owned = [chunk for chunk in sorted(self.chunks.values(), key=lambda c: c.index)][rank::world]
        mine = [chunk.index for chunk in missing_chunks(self.directory, owned)]
        logger.info("rank %d of %d: %d of its %d chunks to sample", rank, world, len(mine), len(owned))
        return DataLoader(mine, batch_size=1, shuffle=False, collate_fn=_first)  # type: ignore[arg-type]

    def predict_step(self, index: int, batch_idx: int) -> None:
        chunk = self.chunks[int(index)]
        if self.warmup:
            self.warmup = False
            generator = torch.Generator(device=self.device).manual_seed(self.seed + 1)
            labels = torch.tensor(chunk.labels[: self.batch_size], dtype=torch.long, device=self.device)
            generate_share(self.var, self.vqvae, labels, generator=generator, sampling=self.sampling)
        images, seconds = sample_chunk(
            self.var, self.vqvae, chunk, seed=self.seed, batch_size=self.batch_size, sampling=self.sampling
        )
        write_chunk(chunk_path(self.directory, chunk.index), images, chunk.labels, seconds)
        self.sampled.append(chunk.index)
        # one line per chunk: progress for long runs, and the record resume tests count
        logger.info("rank %d sampled chunk %d (%d images, %.2f s)", self.global_rank, chunk.index, len(images), seconds)


def sample_missing_chunks(
    trainer: L.Trainer,
    var: VAR,
    vqvae: torch.nn.Module,
    chunks: Sequence[SampleChunk],
    *,
    directory: str | Path,
    seed: int,
    batch_size: int,
    sampling: Mapping[str, Any],
    warmup: bool = True,
) -> dict[str, Any]:
    """Sample the missing ``chunks`` on every rank of ``trainer``; returns this rank's record once all are done.

    Every rank of the job must call it (the final barrier is a collective).
    """
    module = ChunkSampler(
        var,
        vqvae,
        chunks,
        directory=directory,
        seed=seed,
        batch_size=batch_size,
        sampling=sampling,
        warmup=warmup,
    )
    started = time.perf_counter()
    if missing_chunks(directory, chunks):
        trainer.predict(module, return_predictions=False)
    wall = time.perf_counter() - started
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()  # every chunk file exists before rank 0 merges them
    return {
        "rank": trainer.global_rank,
        "world_size": trainer.world_size,
        "sampled_chunks": module.sampled,
        "wall_seconds": wall,
    }
