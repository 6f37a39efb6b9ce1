"""``varkit sample``: class-conditional images from a trained VAR (VAR paper, Sec. 3.2, Algorithm 2).

Examples::

    varkit sample                                            # runs/var-demo/model, every class, 8 per class
    varkit sample model_dir=runs/my-run/model classes=[0,3] per_class=16 sampling.cfg=2.0 sampling.top_k=600
    varkit sample sampling=var_paper npz=true per_class=50 device=cuda precision=bf16   # the paper's protocol
    varkit sample sampling=fast                              # the best stack of training-free speed-ups
    varkit sample 'sampling.speedups=[{name: token_pruning, ratio: 0.4}, {name: guidance_cutoff}]'

Sampling settings live under ``sampling`` (``conf/sampling/``, :class:`varkit.sampling.SamplingConfig`); the
guidance schedule stays the ``cfg_schedule`` group (``cfg_schedule=cosine``), which ``sampling.cfg_schedule``
follows. The old top-level spellings ``cfg=``, ``top_k=``, ``top_p=``, ``temperature=``, ``smooth=`` still work:
they are rewritten to ``sampling.<key>`` (logged once).

Writes ``<output>/images/<class>_<i>.png``, ``<output>/grid.png`` (one row per class) and optionally
``<output>/samples.npz`` (ADM evaluator layout: ``arr_0`` uint8 NHWC), then prints where they are.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

HELP = "sample class-conditional images (PNGs, a grid, optional ADM .npz) from a trained VAR"
CONFIG_NAME = "sample"

logger = logging.getLogger(__name__)


def resolve_dtype(precision: str, device: Any) -> Any:
    import torch

    from varkit.errors import ConfigError

    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    choices = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32}
    if precision not in choices:
        raise ConfigError(f"precision must be auto, bf16 or fp32, got {precision!r}")
    return choices[precision]


def resolve_classes(classes: Any, num_classes: int) -> list[int]:
    from varkit.errors import ConfigError

    if classes in (None, "all"):
        return list(range(num_classes))
    chosen = [int(c) for c in (classes if isinstance(classes, (list, tuple)) else [classes])]
    bad = [c for c in chosen if not 0 <= c < num_classes]
    if bad:
        raise ConfigError(f"classes {bad} are outside 0..{num_classes - 1}")
    return chosen


LEGACY_SAMPLING_KEYS = ("cfg", "top_k", "top_p", "temperature", "smooth")


def sampling_config(cfg: DictConfig) -> Any:
    """The :class:`~varkit.sampling.SamplingConfig` of a command's config: its ``sampling`` node, with the old
    top-level keys (``cfg=1.5 top_k=900 ...``) rewritten to ``sampling.<key>``; bad values raise ConfigError."""
    from varkit.config import to_plain
    from varkit.sampling import SamplingConfig

    values = dict(to_plain(cfg.get("sampling")) or {})
    rewritten = []
    for key in LEGACY_SAMPLING_KEYS:
        value = to_plain(cfg.get(key))
        if value is not None:
            values[key] = value
            rewritten.append(f"{key} -> sampling.{key}")
    if rewritten:
        logger.info("old sampling keys rewritten: %s", ", ".join(rewritten))
    return SamplingConfig.from_config(values)


def generate(
    var: Any,
    vqvae: Any,
    classes: list[int],
    per_class: int,
    *,
    batch_size: int,
    seed: int,
    progress: bool = True,
    sampling: Any = None,
) -> Any:
    """Images ``(len(classes) * per_class, 3, H, W)`` float in [0, 1], class-major, on the CPU."""
    import torch
    from tqdm import tqdm

    from varkit.models.var import sample_images

    labels = torch.tensor([c for c in classes for _ in range(per_class)], dtype=torch.long)
    generator = torch.Generator(device=var.device).manual_seed(int(seed))
    chunks = []
    bar = tqdm(total=len(labels), desc="sampling", unit="img", disable=not progress, file=sys.stderr)
    for chunk in labels.split(max(int(batch_size), 1)):
        images = sample_images(var, vqvae, chunk.to(var.device), sampling=sampling, generator=generator)
        chunks.append(images.float().cpu())
        bar.update(len(chunk))
    bar.close()
    return torch.cat(chunks)


def run(cfg: DictConfig) -> None:
    import time

    from varkit.checkpoint.generator import load_generator
    from varkit.config import to_plain
    from varkit.errors import ConfigError
    from varkit.hardware import resolve_device
    from varkit.image_io import save_grid, save_npz, save_pngs, to_uint8

    sampling = sampling_config(cfg)  # bad sampling settings fail before the model loads
    device = resolve_device(str(cfg.device))
    dtype = resolve_dtype(str(cfg.precision), device)
    model_dir = Path(str(cfg.model_dir))
    if not model_dir.exists():
        raise ConfigError(f"model_dir={model_dir} does not exist: train one (varkit train / varkit quickstart) first")
    var, vqvae, info = load_generator(model_dir, tokenizer=cfg.tokenizer_dir, device=device)
    if dtype != var.dtype:
        var.to(dtype)  # keeping inference weights in bf16 beats autocast re-casting them at every call
    vqvae.decoder_to(dtype)  # channels-last convolutions: ~1.2x faster decoding in float32 too
    classes = resolve_classes(to_plain(cfg.classes), int(var.num_classes))
    names = info["classes"]
    started = time.perf_counter()
    images = generate(
        var,
        vqvae,
        classes,
        int(cfg.per_class),
        batch_size=int(cfg.batch_size),
        seed=int(cfg.seed),
        progress=bool(cfg.progress),
        sampling=sampling,
    )
    elapsed = time.perf_counter() - started
    pixels = to_uint8(images)
    output = Path(str(cfg.output)).resolve()
    output.mkdir(parents=True, exist_ok=True)
    written = []
    if cfg.pngs:
        labels = [c for c in classes for _ in range(int(cfg.per_class))]
        counters: dict[int, int] = {}
        files = []
        for label in labels:
            index = counters.get(label, 0)
            counters[label] = index + 1
            tag = names[label] if names is not None and label < len(names) else f"class{label:04d}"
            files.append(f"{label:04d}_{tag}_{index:03d}")
        save_pngs(pixels, output / "images", files)
        written.append(f"{len(files)} PNGs in {output / 'images'}")
    if cfg.grid:
        grid = save_grid(pixels, output / "grid.png", columns=int(cfg.per_class), upscale=int(cfg.upscale))
        written.append(f"grid ({len(classes)} rows x {int(cfg.per_class)}) {grid}")
    if cfg.npz:
        npz = save_npz(pixels, output / "samples.npz")
        written.append(f"ADM npz {npz}")
    per_image = elapsed / max(len(pixels), 1)
    sys.stdout.write(f"sampled {len(pixels)} images in {elapsed:.1f} s ({per_image:.3f} s/image) on {device}\n")
    sys.stdout.write(f"  sampling: {sampling.describe()}\n")
    for line in written:
        sys.stdout.write(f"  {line}\n")
