"""``varkit eval``: FID / IS / KID / precision-recall of generated (or given) images, and the comparison table.

Images come from checkpoints (``checkpoint.var`` + ``checkpoint.vqvae`` directories written by
``save_pretrained``; ``generate.per_class`` images per class, timed), a folder of images or an ADM ``.npz``.
Generation runs through Lightning (:mod:`varkit.lit.eval_sampling`) on any strategy of the ``trainer`` group
(``trainer=ddp`` for every GPU of a node, ``trainer.num_nodes`` for several); it is split into chunks with their
own seeds, written to ``<output_dir>/shares/``, so the images do not depend on the number of processes and re-running
the same command (same ``hydra.run.dir``) resumes a killed run. Reference statistics come from image shards
(cached) or an ADM reference ``.npz``. Writes ``eval.json`` (every figure and setting), ``table.md`` (the VAR
paper's ``Type | Model | FID↓ | IS↑ | Time`` table with the literature rows of ``literature=...``, plus an sFID
column) and, for generated images, ``samples.npz`` for OpenAI's ADM evaluator.

Examples::

    varkit eval checkpoint.var=runs/var-demo/export/var checkpoint.vqvae=runs/vqvae-demo/export/vqvae \\
        reference.path=data/demo/val generate.per_class=20
    varkit eval trainer=ddp checkpoint.var=... checkpoint.vqvae=... evaluator=inception_fid \\
        reference.source=npz reference.path=VIRTUAL_imagenet256_labeled.npz
    varkit eval samples.source=npz samples.path=samples.npz \\
        reference.source=npz reference.path=VIRTUAL_imagenet512.npz evaluator=inception_fid \\
        evaluator.weights=weights/pt_inception-2015-12-05-6726825d.pth
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

HELP = "evaluate samples (FID, IS, KID, precision/recall) and render the paper's comparison table"
CONFIG_NAME = "eval"

logger = logging.getLogger(__name__)


def _load_models(cfg: DictConfig, device: str) -> tuple[Any, Any]:
    import torch

    from varkit.checkpoint.io import load_pretrained
    from varkit.errors import ConfigError

    if not cfg.checkpoint.var or not cfg.checkpoint.vqvae:
        raise ConfigError(
            "samples.source=generate needs checkpoint.var and checkpoint.vqvae (directories written by "
            "save_pretrained); or evaluate existing images with samples.source=folder|npz samples.path=..."
        )
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(cfg.checkpoint.dtype)
    if dtype is None:
        raise ConfigError(f"checkpoint.dtype must be float32, bfloat16 or float16, got {cfg.checkpoint.dtype!r}")
    for key in ("var", "vqvae"):
        if not Path(cfg.checkpoint[key]).is_dir():
            raise ConfigError(f"checkpoint.{key}={cfg.checkpoint[key]!r} is not a directory")
    var = load_pretrained(cfg.checkpoint.var, expect="var", device=device, dtype=dtype)
    # the VQ-VAE decodes in float32: its output is what gets quantised to uint8 and measured
    vqvae = load_pretrained(cfg.checkpoint.vqvae, expect="vqvae", device=device)
    return var, vqvae


def sampling_settings(cfg: DictConfig) -> dict[str, Any]:
    """The validated ``sampling`` group (old top-level keys such as ``cfg=`` rewritten) as a plain mapping: what the
    chunks of ``shares/`` depend on."""
    from varkit.cli.sample import sampling_config

    return sampling_config(cfg).as_dict()


def _generation_plan(cfg: DictConfig, labels: Any, sampling: dict[str, Any]) -> dict[str, Any]:
    """What the chunks of ``shares/`` depend on (checked on resume); not the number of processes."""
    from varkit.evaluation.samples import labels_digest

    return {
        "var": str(Path(cfg.checkpoint.var).resolve()),
        "vqvae": str(Path(cfg.checkpoint.vqvae).resolve()),
        "dtype": str(cfg.checkpoint.dtype),
        "seed": int(cfg.seed),
        "chunk_size": int(cfg.generate.chunk_size),
        "batch_size": int(cfg.generate.batch_size),
        "num_images": len(labels),
        "labels": labels_digest(labels),
        "sampling": sampling,
    }


def _generate(cfg: DictConfig) -> tuple[Any, Any, dict[str, Any], bool]:
    """Sample (or resume) on every rank of the configured trainer; rank 0 merges the chunks.

    Returns ``(images, labels, timing, is_rank_zero)``; images and labels are ``None`` on other ranks.
    """
    import torch

    from varkit.cli.train import relaunchable_argv
    from varkit.config import safe_instantiate
    from varkit.errors import ConfigError
    from varkit.evaluation.samples import class_labels, merge_chunks, missing_chunks, plan_chunks, write_or_check_plan
    from varkit.lit.eval_sampling import sample_missing_chunks

    if int(cfg.generate.chunk_size) < 1 or int(cfg.generate.batch_size) < 1:
        raise ConfigError("generate.chunk_size and generate.batch_size must be at least 1")
    trainer = safe_instantiate(
        cfg.trainer,
        logger=False,
        callbacks=[],
        enable_checkpointing=False,
        enable_progress_bar=False,
        use_distributed_sampler=False,
    )
    var, vqvae = _load_models(cfg, "cpu")  # Lightning moves them to each rank's device
    classes = list(cfg.generate.classes) if cfg.generate.classes is not None else list(range(var.num_classes))
    labels = class_labels(classes, int(cfg.generate.per_class))
    if cfg.samples.limit is not None:
        labels = labels[: cfg.samples.limit]
    if not len(labels):
        raise ConfigError("nothing to generate: generate.classes / generate.per_class / samples.limit give 0 images")
    sampling = sampling_settings(cfg)
    chunks = plan_chunks(labels, int(cfg.generate.chunk_size))
    directory = Path(cfg.paths.output_dir) / "shares"
    try:
        write_or_check_plan(directory, _generation_plan(cfg, labels, sampling))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    pending = missing_chunks(directory, chunks)
    logger.info("%d of %d chunks already sampled in %s", len(chunks) - len(pending), len(chunks), directory)
    with relaunchable_argv("eval"):  # Lightning's DDP launcher starts the other ranks from sys.argv
        record = sample_missing_chunks(
            trainer,
            var,
            vqvae,
            chunks,
            directory=directory,
            seed=int(cfg.seed),
            batch_size=int(cfg.generate.batch_size),
            sampling=sampling,
            warmup=bool(cfg.generate.warmup),
        )
    if trainer.global_rank != 0:
        return None, None, record, False
    images, merged_labels, seconds = merge_chunks(directory, chunks)
    total = float(sum(seconds))
    timing = {
        # device-seconds per image: the sum of every chunk's generation time (also of chunks of an earlier,
        # resumed run) over the images; independent of how many processes shared the work
        "num_images": len(images),
        "total_seconds": total,
        "seconds_per_image": total / len(images),
        "images_per_second": len(images) / total if total > 0 else float("inf"),
        "chunk_seconds": seconds,
        "wall_seconds": record["wall_seconds"],
        "chunks": len(chunks),
        "chunks_sampled_now": len(pending),
        "settings": {
            "batch_size": int(cfg.generate.batch_size),
            "chunk_size": int(cfg.generate.chunk_size),
            "world_size": trainer.world_size,
            "device": str(trainer.strategy.root_device),
            "dtype": str(cfg.checkpoint.dtype),
            "threads": torch.get_num_threads(),
            "seed": int(cfg.seed),
            "warmup": bool(cfg.generate.warmup),
            "per_class": int(cfg.generate.per_class),
            "num_classes": len(classes),
            **sampling,
        },
    }
    return images, merged_labels, timing, True


def _samples(cfg: DictConfig) -> tuple[Any, Any, dict[str, Any] | None, str, bool]:
    """(uint8 NHWC images, labels or None, timing dict or None, source description, is rank zero)."""
    from varkit.errors import ConfigError
    from varkit.evaluation.npz import load_samples_npz
    from varkit.evaluation.samples import load_image_folder

    source = cfg.samples.source
    limit = cfg.samples.limit
    if source in ("folder", "npz"):
        if not cfg.samples.path or not Path(cfg.samples.path).exists():
            raise ConfigError(f"samples.path={cfg.samples.path!r} does not exist (samples.source={source})")
        if source == "folder":
            images = load_image_folder(cfg.samples.path, limit=limit)
        else:
            images = load_samples_npz(cfg.samples.path)[:limit]
        return images, None, None, f"{source}:{cfg.samples.path}", True
    if source != "generate":
        raise ConfigError(f"samples.source must be generate, folder or npz, got {source!r}")
    images, labels, timing, rank_zero = _generate(cfg)
    return images, labels, timing, f"generate:{cfg.checkpoint.var}", rank_zero


def _is_worker_process() -> bool:
    """True in a process a launcher started for a rank other than 0 (it only samples its share)."""
    return any(os.environ.get(name, "0") not in ("", "0") for name in ("LOCAL_RANK", "NODE_RANK", "RANK"))


def _reference(cfg: DictConfig, extractor: Any, device: str) -> Any:
    from varkit.data.shards import expand_urls
    from varkit.errors import ConfigError
    from varkit.evaluation.stats import reference_from_npz, reference_from_shards

    ref = cfg.reference
    if ref.source == "npz":
        if not ref.path or not Path(ref.path).is_file():
            raise ConfigError(f"reference.path={ref.path!r} is not a file (reference.source=npz)")
        return reference_from_npz(ref.path, extractor, batch_size=int(cfg.batch_size), device=device)
    if ref.source != "shards":
        raise ConfigError(f"reference.source must be shards or npz, got {ref.source!r}")
    urls = [u for u in expand_urls(ref.path) if Path(u).is_file()] if ref.path else []
    if not urls:
        raise ConfigError(f"reference.path={ref.path!r} names no shard files (a directory, a pattern or a list)")
    return reference_from_shards(
        urls,
        extractor,
        image_size=int(ref.image_size),
        cache_dir=ref.cache_dir,
        max_images=ref.max_images,
        batch_size=int(cfg.batch_size),
        device=device,
    )


def _table(cfg: DictConfig, result: dict[str, Any]) -> str:
    from varkit.config import to_plain
    from varkit.errors import ConfigError
    from varkit.evaluation.table import ComparisonRow, relative_times, render_table, rows_from_config

    literature = to_plain(cfg.literature) or {}
    rows = rows_from_config(literature.get("rows", [])) if cfg.table.literature else []
    measured = [result["table_row"]]
    for path in cfg.table.include or []:
        measured.append(json.loads(Path(path).read_text())["table_row"])
    rows += [ComparisonRow(**row) for row in measured]
    if cfg.table.time_baseline is not None:
        try:
            rows = relative_times(
                rows, baseline=cfg.table.time_baseline, baseline_seconds_per_image=cfg.table.baseline_seconds_per_image
            )
        except ValueError as err:
            raise ConfigError(f"table.time_baseline: {err}") from None
    footnotes = list(literature.get("footnotes", [])) if cfg.table.literature else []
    footnotes.append(
        f"{cfg.table.model}: {result['metrics']['num_samples']} samples, extractor `{result['extractor']}`, "
        f"reference {result['reference']['source']} ({result['reference']['num_images']} images)."
    )
    return render_table(rows, footnotes=footnotes)


def run(cfg: DictConfig) -> None:
    import torch

    from varkit.config import to_plain
    from varkit.errors import ConfigError
    from varkit.evaluation.extractors import build_extractor
    from varkit.evaluation.features import ChecksumError
    from varkit.evaluation.npz import save_samples_npz
    from varkit.evaluation.runner import MetricSettings, evaluate_images
    from varkit.hardware import resolve_device

    torch.manual_seed(int(cfg.seed))
    device = str(resolve_device(str(cfg.device)))  # this command passes devices on as strings
    extractor = None
    if not _is_worker_process():
        # before any sampling: a missing or wrong weights file is one sentence, not an error after hours of work
        try:
            extractor = build_extractor(to_plain(cfg.evaluator)).to(device)
        except (FileNotFoundError, ChecksumError) as err:
            raise ConfigError(str(err)) from None
    images, labels, timing, _, rank_zero = _samples(cfg)
    if not rank_zero:
        return
    if extractor is None:
        extractor = build_extractor(to_plain(cfg.evaluator)).to(device)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if timing is not None and cfg.samples.save_npz:
        save_samples_npz(output_dir / "samples.npz", images)
    if cfg.reference.source == "shards" and images.shape[1] != int(cfg.reference.image_size):
        logger.warning(
            "samples are %dpx but reference images are cropped to reference.image_size=%d: set it to the "
            "samples' resolution, or FID also measures the resolution gap",
            images.shape[1],
            cfg.reference.image_size,
        )
    reference = _reference(cfg, extractor, device)
    settings = MetricSettings(**to_plain(cfg.metrics), seed=int(cfg.seed))
    metrics = evaluate_images(
        images, extractor, reference, settings, batch_size=int(cfg.batch_size), device=device, labels=labels
    )
    result: dict[str, Any] = {
        "metrics": metrics,
        "timing": timing,
        "samples": {"source": source_of(cfg), "count": len(images), "shape": list(images.shape[1:])},
        "reference": {"source": reference.source, "num_images": reference.num_images, "path": str(cfg.reference.path)},
        "extractor": extractor.fingerprint,
        "metric_settings": settings.as_dict(),
        "table_row": {
            "type": str(cfg.table.type),
            "model": str(cfg.table.model),
            "fid": metrics["fid"],
            "sfid": metrics["sfid"],
            "inception_score": metrics["inception_score"],
            "seconds_per_image": timing["seconds_per_image"] if timing is not None else None,
        },
        "config": to_plain(cfg),
    }
    table = _table(cfg, result)
    (output_dir / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    (output_dir / "table.md").write_text(table)
    print(table, end="")
    print("\n" + summary_line(metrics))
    if timing is not None:
        print(
            f"generation: {timing['seconds_per_image']:.4f} s/image, {timing['images_per_second']:.2f} images/s "
            f"(batch {timing['settings']['batch_size']}, {timing['settings']['world_size']} process(es) on "
            f"{timing['settings']['device']}, {timing['settings']['dtype']}, {timing['settings']['threads']} threads; "
            f"{timing['chunks_sampled_now']} of {timing['chunks']} chunks sampled now)"
        )
    for note in metrics["notes"]:
        print(f"note: {note}")
    print(f"wrote {output_dir / 'eval.json'} and {output_dir / 'table.md'}")


def source_of(cfg: DictConfig) -> str:
    if cfg.samples.source == "generate":
        return f"generate:{cfg.checkpoint.var}"
    return f"{cfg.samples.source}:{cfg.samples.path}"


def summary_line(metrics: dict[str, Any]) -> str:
    """One line with every figure (``—`` where unavailable)."""

    def fmt(key: str, spec: str) -> str:
        return "—" if metrics.get(key) is None else format(metrics[key], spec)

    line = (
        f"FID {fmt('fid', '.3f')}  sFID {fmt('sfid', '.3f')}  IS {fmt('inception_score', '.2f')}  "
        f"KID {fmt('kid', '.5f')}  precision {fmt('precision', '.3f')}  recall {fmt('recall', '.3f')}"
    )
    if metrics.get("classifier_accuracy") is not None:
        line += f"  accuracy {fmt('classifier_accuracy', '.3f')}"
        if metrics.get("reference_accuracy") is not None:
            line += f" (real images: {fmt('reference_accuracy', '.3f')})"
    return line + f"  ({metrics['num_samples']} samples)"
