"""``varkit eval``: FID / IS / KID / precision-recall of generated (or given) images, and the comparison table.

Images come from checkpoints (``checkpoint.var`` + ``checkpoint.vqvae`` directories written by
``save_pretrained``; ``generate.per_class`` images per class, timed), a folder of images or an ADM ``.npz``.
Reference statistics come from image shards (cached) or an ADM reference ``.npz``. Writes ``eval.json`` (every
figure and setting), ``table.md`` (the VAR paper's ``Type | Model | FID↓ | IS↑ | Time`` table with the literature
rows of ``literature=...``) and, for generated images, ``samples.npz`` for OpenAI's ADM evaluator.

Examples::

    varkit eval checkpoint.var=runs/var-demo/export/var checkpoint.vqvae=runs/vqvae-demo/export/vqvae \\
        reference.path=data/demo/val generate.per_class=20 sampling=fast   # sampling: conf/sampling/
    varkit eval samples.source=npz samples.path=samples.npz \\
        reference.source=npz reference.path=VIRTUAL_imagenet512.npz evaluator=inception_fid \\
        evaluator.weights=weights/pt_inception-2015-12-05-6726825d.pth
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

HELP = "evaluate samples (FID, IS, KID, precision/recall) and render the paper's comparison table"
CONFIG_NAME = "eval"

logger = logging.getLogger(__name__)


def resolve_device(spec: str) -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``; anything else as given."""
    import torch

    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return spec


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


def _samples(cfg: DictConfig, device: str) -> tuple[Any, dict[str, Any] | None, str]:
    """(uint8 NHWC images, timing dict or None, description of the source)."""
    from varkit.cli.sample import sampling_config
    from varkit.errors import ConfigError
    from varkit.evaluation.npz import load_samples_npz
    from varkit.evaluation.samples import class_labels, generate_samples, load_image_folder

    source = cfg.samples.source
    limit = cfg.samples.limit
    if source in ("folder", "npz"):
        if not cfg.samples.path or not Path(cfg.samples.path).exists():
            raise ConfigError(f"samples.path={cfg.samples.path!r} does not exist (samples.source={source})")
        if source == "folder":
            images = load_image_folder(cfg.samples.path, limit=limit)
        else:
            images = load_samples_npz(cfg.samples.path)[:limit]
        return images, None, f"{source}:{cfg.samples.path}"
    if source != "generate":
        raise ConfigError(f"samples.source must be generate, folder or npz, got {source!r}")
    var, vqvae = _load_models(cfg, device)
    classes = list(cfg.generate.classes) if cfg.generate.classes is not None else list(range(var.num_classes))
    labels = class_labels(classes, int(cfg.generate.per_class))
    if limit is not None:
        labels = labels[:limit]
    sampling = sampling_config(cfg)
    images, timing = generate_samples(
        var,
        vqvae,
        labels,
        batch_size=int(cfg.generate.batch_size),
        seed=int(cfg.seed),
        sampling=sampling,
        warmup=bool(cfg.generate.warmup),
    )
    timing.settings.update({"per_class": int(cfg.generate.per_class), "num_classes": len(classes)})
    return images, timing.as_dict(), f"generate:{cfg.checkpoint.var}"


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

    torch.manual_seed(int(cfg.seed))
    device = resolve_device(str(cfg.device))
    try:
        extractor = build_extractor(to_plain(cfg.evaluator)).to(device)
    except (FileNotFoundError, ChecksumError) as err:
        raise ConfigError(str(err)) from None
    images, timing, source = _samples(cfg, device)
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
    metrics = evaluate_images(images, extractor, reference, settings, batch_size=int(cfg.batch_size), device=device)
    result: dict[str, Any] = {
        "metrics": metrics,
        "timing": timing,
        "samples": {"source": source, "count": len(images), "shape": list(images.shape[1:])},
        "reference": {"source": reference.source, "num_images": reference.num_images, "path": str(cfg.reference.path)},
        "extractor": extractor.fingerprint,
        "metric_settings": settings.as_dict(),
        "table_row": {
            "type": str(cfg.table.type),
            "model": str(cfg.table.model),
            "fid": metrics["fid"],
            "inception_score": metrics["inception_score"],
            "seconds_per_image": timing["seconds_per_image"] if timing is not None else None,
        },
        "config": to_plain(cfg),
    }
    table = _table(cfg, result)
    (output_dir / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    (output_dir / "table.md").write_text(table)
    print(table, end="")
    kid = "—" if metrics["kid"] is None else f"{metrics['kid']:.5f}"
    precision = "—" if metrics["precision"] is None else f"{metrics['precision']:.3f}"
    recall = "—" if metrics["recall"] is None else f"{metrics['recall']:.3f}"
    print(
        f"\nFID {metrics['fid']:.3f}  IS {metrics['inception_score']:.2f}  KID {kid}  "
        f"precision {precision}  recall {recall}  ({metrics['num_samples']} samples)"
    )
    if timing is not None:
        print(
            f"generation: {timing['seconds_per_image']:.4f} s/image, {timing['images_per_second']:.2f} images/s "
            f"(batch {timing['settings']['batch_size']}, {timing['settings']['device']}, "
            f"{timing['settings']['dtype']}, {timing['settings']['threads']} threads)"
        )
    print(f"wrote {output_dir / 'eval.json'} and {output_dir / 'table.md'}")
