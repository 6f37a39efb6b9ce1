"""Where evaluated images come from: a folder of image files, an ADM ``.npz``, or generation from checkpoints.

Generation follows the VAR paper's protocol (Tian et al. 2024, §5): a fixed number of images per class, class-
conditional sampling with classifier-free guidance, images quantised to ``uint8`` for the evaluator. The wall-clock
time of generation (model loading excluded) is recorded with the settings used, for the table's ``Time`` column.

A 50k-image evaluation is split into **chunks** (:func:`plan_chunks`): the list of requested labels (class ``c``
repeated ``per_class`` times, classes in order) is cut into consecutive chunks of a fixed size, and chunk ``i`` is
sampled with its own generator seeded ``mix_seed(seed, i)``. Which process samples a chunk, and how many processes
there are, therefore never changes its images: a run on 8 GPUs gives the images of a run on 1. Each chunk is
written atomically to ``shares/chunk-<i>.npz`` (:func:`write_chunk`), so a killed run resumes by sampling only the
missing chunks; :func:`merge_chunks` concatenates them in order into the ADM sample batch. Every sampling call goes
through :func:`generate_share`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from varkit.rng import mix_seed
from varkit.sampling import SamplingConfig

if TYPE_CHECKING:
    from varkit.models.var import VAR

__all__ = [
    "GenerationTiming",
    "SampleChunk",
    "chunk_path",
    "chunk_seed",
    "class_labels",
    "generate_samples",
    "generate_share",
    "labels_digest",
    "load_image_folder",
    "merge_chunks",
    "missing_chunks",
    "plan_chunks",
    "read_chunk",
    "sample_chunk",
    "to_uint8_nhwc",
    "write_chunk",
    "write_or_check_plan",
]

logger = logging.getLogger(__name__)

FOLDER_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")


def load_image_folder(path: str | Path, *, limit: int | None = None) -> np.ndarray:
    """All images of a folder (sorted by name; PNG/JPEG/WebP) as ``uint8`` ``(n, H, W, 3)``; sizes must agree."""
    files = sorted(p for p in Path(path).iterdir() if p.suffix.lower() in FOLDER_EXTENSIONS)
    if limit is not None:
        files = files[:limit]
    if not files:
        raise FileNotFoundError(f"no image files ({', '.join(FOLDER_EXTENSIONS)}) in {path}")
    arrays = []
    for file in files:
        with Image.open(file) as image:
            arrays.append(np.asarray(image.convert("RGB")))
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"images in {path} differ in size: {sorted(shapes)[:4]}")
    return np.stack(arrays)


def to_uint8_nhwc(images: torch.Tensor) -> np.ndarray:
    """Float images ``(b, 3, H, W)`` in [0, 1] → ``uint8`` ``(b, H, W, 3)`` (rounded to the nearest level)."""
    levels = images.detach().float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    return levels.permute(0, 2, 3, 1).cpu().numpy()


def class_labels(classes: Sequence[int], per_class: int) -> torch.Tensor:
    """Labels ``(len(classes) * per_class,)``: each class repeated ``per_class`` times, classes in order."""
    return torch.tensor([c for c in classes for _ in range(per_class)], dtype=torch.long)


@dataclass
class GenerationTiming:
    """Wall-clock timing of a generation run and the settings it used."""

    num_images: int
    total_seconds: float
    batch_seconds: list[float] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds_per_image(self) -> float:
        return self.total_seconds / max(self.num_images, 1)

    @property
    def images_per_second(self) -> float:
        return self.num_images / self.total_seconds if self.total_seconds > 0 else float("inf")

    def as_dict(self) -> dict[str, Any]:
        return {
            "num_images": self.num_images,
            "total_seconds": self.total_seconds,
            "seconds_per_image": self.seconds_per_image,
            "images_per_second": self.images_per_second,
            "batch_seconds": self.batch_seconds,
            "settings": self.settings,
        }


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def generate_share(
    var: VAR,
    vqvae: torch.nn.Module,
    labels: torch.Tensor,
    *,
    generator: torch.Generator,
    sampling: Mapping[str, Any] | SamplingConfig,
) -> torch.Tensor:
    """THE sampling call of ``varkit eval``: images ``(b, 3, H, W)`` in [0, 1] for ``labels``.

    ``sampling``: the :class:`~varkit.sampling.SamplingConfig` or its plain mapping (the ``sampling`` config group);
    every generation path of the evaluation goes through here.
    """
    from varkit.models.var import sample_images

    return sample_images(var, vqvae, labels, sampling=SamplingConfig.from_config(sampling), generator=generator)


def generate_samples(
    var: VAR,
    vqvae: torch.nn.Module,
    labels: torch.Tensor,
    *,
    batch_size: int,
    seed: int,
    sampling: Any = None,
    warmup: bool = True,
) -> tuple[np.ndarray, GenerationTiming]:
    """Generate one image per label with :func:`varkit.models.var.sample_images`; ``uint8`` NHWC plus timing.

    ``sampling``: a :class:`varkit.sampling.SamplingConfig` or a mapping of its fields (``cfg``, ``top_k``, ...,
    ``speedups``); ``None``: the defaults.
    One generator seeded with ``seed`` drives all batches, so a run is reproducible for a given batch size.
    ``warmup``: first generate one untimed, discarded batch (its own generator), so one-off costs (allocator,
    kernel selection, lazy initialisation) do not inflate the time per image.
    """
    spec = SamplingConfig.from_config(sampling)
    device = next(var.parameters()).device
    if warmup and len(labels):
        warm_generator = torch.Generator(device=device).manual_seed(seed + 1)
        generate_share(var, vqvae, labels[:batch_size], generator=warm_generator, sampling=spec)
    generator = torch.Generator(device=device).manual_seed(seed)
    outputs: list[np.ndarray] = []
    batch_seconds: list[float] = []
    _synchronize(device)
    start = time.perf_counter()
    for first in range(0, len(labels), batch_size):
        batch_start = time.perf_counter()
        images = generate_share(var, vqvae, labels[first : first + batch_size], generator=generator, sampling=spec)
        _synchronize(device)
        outputs.append(to_uint8_nhwc(images))
        batch_seconds.append(time.perf_counter() - batch_start)
        logger.info("generated %d / %d images", min(first + batch_size, len(labels)), len(labels))
    total = time.perf_counter() - start
    settings = {
        "batch_size": batch_size,
        "device": str(device),
        "dtype": str(next(var.parameters()).dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "seed": seed,
        "warmup": warmup,
        **spec.as_dict(),
    }
    timing = GenerationTiming(len(labels), total, batch_seconds, settings)
    return np.concatenate(outputs), timing


# -- chunked, resumable, world-size independent generation ---------------------------------------------------------


@dataclass(frozen=True)
class SampleChunk:
    """Chunk ``index`` of a run: the requested ``labels``, the first of which is image ``start`` of the run."""

    index: int
    start: int
    labels: tuple[int, ...]


def plan_chunks(labels: Sequence[int] | torch.Tensor, chunk_size: int) -> list[SampleChunk]:
    """Cut the run's labels into consecutive chunks of ``chunk_size`` (the last may be shorter)."""
    if chunk_size < 1:
        raise ValueError(f"chunk size must be at least 1, got {chunk_size}")
    values = [int(label) for label in labels]
    return [
        SampleChunk(index, start, tuple(values[start : start + chunk_size]))
        for index, start in enumerate(range(0, len(values), chunk_size))
    ]


def chunk_seed(seed: int, index: int) -> int:
    """Seed of chunk ``index``: depends only on the run's seed and the chunk, never on which process samples it."""
    return mix_seed(seed, index)


def chunk_path(directory: str | Path, index: int) -> Path:
    return Path(directory) / f"chunk-{index:06d}.npz"


def sample_chunk(
    var: VAR,
    vqvae: torch.nn.Module,
    chunk: SampleChunk,
    *,
    seed: int,
    batch_size: int,
    sampling: Mapping[str, Any],
) -> tuple[np.ndarray, float]:
    """Generate one chunk (batches of ``batch_size`` from the chunk's own generator); ``uint8`` NHWC and seconds."""
    device = next(var.parameters()).device
    generator = torch.Generator(device=device).manual_seed(chunk_seed(seed, chunk.index))
    labels = torch.tensor(chunk.labels, dtype=torch.long, device=device)
    outputs = []
    _synchronize(device)
    start = time.perf_counter()
    for first in range(0, len(labels), batch_size):
        images = generate_share(var, vqvae, labels[first : first + batch_size], generator=generator, sampling=sampling)
        outputs.append(to_uint8_nhwc(images))
    _synchronize(device)
    return np.concatenate(outputs), time.perf_counter() - start


def _atomic_write(path: Path, write: Any) -> None:
    """Write through a temporary file in the same directory, then rename: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_chunk(path: str | Path, images: np.ndarray, labels: Sequence[int], seconds: float) -> Path:
    """Atomically write a chunk: images ``uint8`` NHWC, their labels and the seconds its generation took."""
    path = Path(path)
    arrays = {"images": images, "labels": np.asarray(labels, dtype=np.int64), "seconds": np.array(float(seconds))}
    _atomic_write(path, lambda stream: np.savez(stream, **arrays))  # type: ignore[arg-type]
    return path


def read_chunk(path: str | Path) -> tuple[np.ndarray, np.ndarray, float]:
    """``(images, labels, seconds)`` of a chunk file."""
    with np.load(path, allow_pickle=False) as data:
        return data["images"], data["labels"], float(data["seconds"])


def missing_chunks(directory: str | Path, chunks: Sequence[SampleChunk]) -> list[SampleChunk]:
    """The chunks without a file in ``directory`` (atomic writes: an existing file is a finished chunk)."""
    return [chunk for chunk in chunks if not chunk_path(directory, chunk.index).is_file()]


def merge_chunks(directory: str | Path, chunks: Sequence[SampleChunk]) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Images and labels of every chunk, in chunk order, and each chunk's generation seconds."""
    images, labels, seconds = [], [], []
    for chunk in chunks:
        chunk_images, chunk_labels, chunk_seconds = read_chunk(chunk_path(directory, chunk.index))
        if tuple(int(label) for label in chunk_labels) != chunk.labels:
            raise ValueError(f"{chunk_path(directory, chunk.index)} holds other labels than chunk {chunk.index}")
        images.append(chunk_images)
        labels.append(chunk_labels)
        seconds.append(chunk_seconds)
    return np.concatenate(images), np.concatenate(labels), seconds


def write_or_check_plan(directory: str | Path, plan: Mapping[str, Any]) -> None:
    """Record the settings the chunks of ``directory`` are sampled with, or check them against the recorded ones.

    Chunks from other settings (seed, checkpoints, sampling options, labels, chunk or batch size) must never be
    merged into a run: a mismatch raises ``ValueError`` naming the differing keys.
    """
    path = Path(directory) / "plan.json"
    document = json.loads(json.dumps(dict(plan), sort_keys=True, default=str))
    if path.is_file():
        recorded = json.loads(path.read_text())
        differing = sorted(key for key in set(recorded) | set(document) if recorded.get(key) != document.get(key))
        if differing:
            raise ValueError(
                f"{directory} holds chunks sampled with other settings ({', '.join(differing)} differ): "
                "use another output directory (hydra.run.dir) or delete it to start over"
            )
        return
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    _atomic_write(path, lambda stream: stream.write(text.encode()))


def labels_digest(labels: Sequence[int] | torch.Tensor) -> str:
    """Short SHA-256 of a label list (identifies the requested classes and counts in a plan)."""
    return hashlib.sha256(np.asarray([int(v) for v in labels], dtype=np.int64).tobytes()).hexdigest()[:16]
