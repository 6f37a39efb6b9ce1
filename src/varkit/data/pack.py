"""``varkit data pack``: an image folder → deterministic webdataset shards (``KEY.{jpg,png,webp}`` + ``KEY.cls``).

Two input layouts:

* ImageNet layout — one sub-folder per class (``SRC/n01440764/*.JPEG``); classes are the sorted folder names.
* flat folder + labels file — a CSV (``filename,label`` rows, optional header) or a JSON object
  ``{filename: label}``; labels are class names or integers.

Files are listed in sorted order, then (by default, ``order="shuffle"``) permuted with a seeded generator before
they are written, and decoded/resized by a process pool whose results are consumed in order, so the shards
(written by :class:`varkit.data.shards.ShardWriter`, fixed tar headers) are byte-identical across runs and worker
counts for one seed. Unreadable files are skipped and listed in the summary.

Why shuffle across shards: webdataset shuffles only inside a buffer (``shuffle_buffer`` samples) over a few open
shards. Packed in sorted class order, each shard holds one or two classes, so a training batch draws from a
handful of classes at a time and a validation grid of the first batch shows a single class. A seeded permutation
gives every shard a near-uniform class mix; the seed and order are recorded in ``pack.json`` beside
``classes.json``. ``order="sorted"`` keeps the folder order (e.g. to diff two packs of a growing folder).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import multiprocessing
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from varkit.data.shards import ShardWriter, write_classes
from varkit.data.transforms import center_crop, resize_shorter_side

__all__ = ["PACK_INFO_FILE", "PackSummary", "pack_images"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
PIL_FORMAT_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
SAVE_FORMATS = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}
ORDERS = ("shuffle", "sorted")
#: written beside ``classes.json``: how the shards were packed (order, seed, counts)
PACK_INFO_FILE = "pack.json"


@dataclass
class PackSummary:
    """What a pack run did: samples written, files skipped (with reasons), shards and classes."""

    samples: int = 0
    skipped: list[str] = field(default_factory=list)
    shards: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    order: str = "shuffle"
    seed: int | None = 0


@dataclass(frozen=True)
class _Job:
    index: int
    path: str
    relative: str
    label: int
    class_name: str


@dataclass(frozen=True)
class _Options:
    resolution: int | None
    image_format: str
    quality: int
    metadata: bool


def _read_labels(labels_file: Path) -> dict[str, str]:
    if labels_file.suffix.lower() == ".json":
        return {str(k): str(v) for k, v in json.loads(labels_file.read_text()).items()}
    rows = [row for row in csv.reader(labels_file.read_text().splitlines()) if row]
    if rows and rows[0][0].strip().lower() in ("filename", "file", "path", "image", "name"):
        rows = rows[1:]
    return {row[0].strip(): row[1].strip() for row in rows}


def _class_order(names: set[str]) -> list[str]:
    if all(name.isdigit() for name in names):
        return [str(i) for i in range(max(int(n) for n in names) + 1)]
    return sorted(names)


def _collect(source: Path, labels_file: Path | None) -> tuple[list[_Job], list[str]]:
    if labels_file is not None:
        labels = _read_labels(labels_file)
        classes = _class_order(set(labels.values()))
        index_of = {name: i for i, name in enumerate(classes)}
        jobs = []
        root = source.resolve()
        for i, relative in enumerate(sorted(labels)):
            name = labels[relative]
            if Path(relative).is_absolute() or not (root / relative).resolve().is_relative_to(root):
                # a labels file is data from elsewhere: it must not make pack read (and ship) files outside SOURCE
                raise ValueError(f"{labels_file}: the entry {relative!r} points outside {source}; use relative paths")
            jobs.append(_Job(i, str(source / relative), relative, index_of[name], name))
        return jobs, classes
    class_dirs = sorted(p for p in source.iterdir() if p.is_dir())
    if not class_dirs:
        raise ValueError(f"{source} has no class sub-folders; for a flat folder pass a labels file (CSV or JSON)")
    classes = [p.name for p in class_dirs]
    files = [
        (path, label)
        for label, folder in enumerate(class_dirs)
        for path in sorted(folder.rglob("*"))
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
    ]
    jobs = [
        _Job(i, str(path), path.relative_to(source).as_posix(), label, classes[label])
        for i, (path, label) in enumerate(files)
    ]
    return jobs, classes


def _prepare(job: _Job, options: _Options) -> tuple[_Job, dict[str, bytes] | None, str]:
    """Read, check and (optionally) resize one file; ``(job, fields or None, error)``."""
    try:
        raw = Path(job.path).read_bytes()
        with Image.open(io.BytesIO(raw)) as opened:
            source_format = opened.format or ""
            opened.load()
            image = opened.convert("RGB")
        if options.resolution is not None:
            image = center_crop(resize_shorter_side(image, options.resolution), options.resolution)
        extension = options.image_format
        if extension == "keep" and options.resolution is None and source_format in PIL_FORMAT_EXTENSIONS:
            payload, extension = raw, PIL_FORMAT_EXTENSIONS[source_format]
        else:
            if extension == "keep":
                extension = PIL_FORMAT_EXTENSIONS.get(source_format, "png")
            buffer = io.BytesIO()
            save_options: dict[str, Any] = {"quality": options.quality} if extension in ("jpg", "webp") else {}
            image.save(buffer, format=SAVE_FORMATS[extension], **save_options)
            payload = buffer.getvalue()
    except Exception as error:
        return job, None, f"{job.relative}: {type(error).__name__}: {error}"
    fields = {extension: payload, "cls": str(job.label).encode()}
    if options.metadata:
        meta = {"path": job.relative, "class": job.class_name, "width": image.width, "height": image.height}
        fields["json"] = json.dumps(meta, sort_keys=True).encode()
    return job, fields, ""


def _prepare_star(arguments: tuple[_Job, _Options]) -> tuple[_Job, dict[str, bytes] | None, str]:
    return _prepare(*arguments)


def pack_images(
    source: str | Path,
    out_dir: str | Path,
    *,
    labels_file: str | Path | None = None,
    resolution: int | None = None,
    image_format: str = "keep",
    quality: int = 95,
    max_count: int = 10_000,
    max_bytes: int = 1 << 30,
    workers: int = 1,
    metadata: bool = True,
    progress: bool = False,
    order: str = "shuffle",
    seed: int = 0,
) -> PackSummary:
    """Pack an image folder into shards in ``out_dir`` plus ``classes.json``; returns a :class:`PackSummary`.

    Args:
        source: ImageNet-layout folder, or a flat folder when ``labels_file`` is given.
        labels_file: CSV/JSON labels of a flat folder (paths relative to ``source``).
        resolution: resize the shorter side to this and center-crop a square (``None``: keep images as they are).
        image_format: ``keep`` (original bytes when possible), ``jpg``, ``png`` (lossless) or ``webp``.
        quality: JPEG/WebP quality when re-encoding.
        max_count, max_bytes: shard size limits.
        workers: decode/resize processes (output does not depend on it).
        metadata: also write ``KEY.json`` with the original path, class name and size.
        order: ``shuffle`` (default: a permutation seeded by ``seed``, so every shard mixes the classes) or
            ``sorted`` (folder order: each shard then holds one class or two).
        seed: the permutation's seed (recorded in ``pack.json``).

    Sample keys are the files' positions in sorted order, whatever ``order`` is.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be shuffle or sorted, got {order!r}")
    if image_format not in ("keep", *SAVE_FORMATS):
        raise ValueError(f"image_format must be keep, jpg, png or webp, got {image_format!r}")
    source = Path(source)
    if not source.is_dir():
        raise ValueError(f"{source} is not a folder")
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise ValueError(f"cannot write shards to {out_dir}: it is a file")
    jobs, classes = _collect(source, Path(labels_file) if labels_file is not None else None)
    if not jobs:
        raise ValueError(f"no image files found in {source}")
    if order == "shuffle":
        random.Random(seed).shuffle(jobs)  # a pure-Python generator: the same permutation on every platform
    options = _Options(resolution, image_format, quality, metadata)
    summary = PackSummary(classes=classes, order=order, seed=seed if order == "shuffle" else None)
    work = [(job, options) for job in jobs]
    # fork: workers inherit the imported modules (spawn would re-import torch in every worker)
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    pool = multiprocessing.get_context(method).Pool(workers) if workers > 1 else None
    try:
        results: Iterator = pool.imap(_prepare_star, work, chunksize=16) if pool else map(_prepare_star, work)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(work), desc="pack", unit="img")
        with ShardWriter(out_dir, max_count=max_count, max_bytes=max_bytes) as writer:
            for job, fields, error in results:
                if fields is None:
                    summary.skipped.append(error)
                    logger.warning("skipping unreadable file %s", error)
                    continue
                writer.write(f"{job.index:08d}", fields)
            summary.samples = writer.samples_written
            summary.shards = [p.name for p in writer.paths]
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    write_classes(out_dir, classes)
    info = {
        "order": summary.order,
        "seed": summary.seed,
        "samples": summary.samples,
        "shards": summary.shards,
        "classes": len(classes),
        "skipped": len(summary.skipped),
    }
    (Path(out_dir) / PACK_INFO_FILE).write_text(json.dumps(info, indent=1) + "\n")
    return summary
