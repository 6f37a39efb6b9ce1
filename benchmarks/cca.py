"""Guidance-free sampling after CCA (Chen et al., ICLR 2025, Sec. 5) on the demo: the quickstart transformer vs its
condition-contrastive-alignment fine-tune, each sampled without guidance and with the quickstart's guidance.

For every (model, guidance, seed) it generates ``per_class`` images of every class (``varkit sample`` defaults:
fp32 on the CPU, batch 32, linear CFG schedule, no top-k/top-p) and reports

* FID against the demo validation shards with the ``tiny_demo`` evaluator (the seeded ``tiny`` extractor whose
  head is fit on the demo training images); two sampling seeds per row give the seed noise;
* classifier accuracy: the fraction of generated images whose ``tiny_demo`` logits' argmax is the requested class
  (the same head classifies the real validation images, printed as the ceiling);
* seconds per image (median over the seeds' runs; the rows run one after another on the same machine, so compare
  the ratio column, not absolute times).

    python benchmarks/cca.py                                   # trains experiment=cca_var from the quickstart
    python benchmarks/cca.py --variant lr3e-4 optim.lr=3e-4 --variant b0.05 objective.beta=0.05
    python benchmarks/cca.py --cca-model other=/path/to/run/model --no-train --per-class 100

The base model directory is copied into ``--work`` (never modified); each ``--variant NAME OVERRIDE...`` runs
``varkit train experiment=cca_var init_from=<copy> ...`` with those overrides (skipped when its export exists).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

QUICKSTART = Path("/work/artifacts/quickstart")

logger = logging.getLogger("benchmarks.cca")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quickstart", type=Path, default=QUICKSTART, help="the quickstart output folder")
    parser.add_argument("--base", type=Path, default=None, help="base generator dir (default: <quickstart>/runs/...)")
    parser.add_argument(
        "--base-checkpoint",
        type=Path,
        default=None,
        help="export the base from this training checkpoint of the quickstart run (EMA weights) instead",
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/cca-bench"), help="runs, samples and results")
    parser.add_argument(
        "--variant",
        nargs="+",
        action="append",
        metavar=("NAME", "OVERRIDE"),
        help="a CCA run: a name and `varkit train` overrides (repeatable); default: the preset as is",
    )
    parser.add_argument("--cca-model", action="append", default=[], help="NAME=DIR of an already trained model")
    parser.add_argument("--skip-base", action="store_true", help="do not evaluate the base model again")
    parser.add_argument("--no-train", action="store_true", help="only evaluate (--cca-model, existing variants)")
    parser.add_argument("--cfg", type=float, default=2.0, help="the quickstart's guidance scale (varkit quickstart)")
    parser.add_argument("--per-class", type=int, default=50, help="generated images per class and seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--timing-repeats", type=int, default=7, help="interleaved timing batches per setting")
    parser.add_argument("--timing-only", action="store_true", help="only the interleaved sampling-time comparison")
    parser.add_argument("--train-precision", default="bf16-mixed", help="trainer.precision of the CCA runs")
    return parser.parse_args()


def export_checkpoint(checkpoint: Path, quickstart: Path, output: Path) -> Path:
    """A generator directory from a ``varkit train`` checkpoint: its EMA weights (the export would use them)."""
    from varkit.checkpoint.generator import write_generator
    from varkit.data.shards import read_classes
    from varkit.models.var import VAR

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model = VAR.from_config(state["hyper_parameters"]["model"])
    weights = {k.removeprefix("model."): v.float() for k, v in state["state_dict"].items()}
    ema = next((v for k, v in state.get("callbacks", {}).items() if "EMA" in k), None)
    if ema is not None:
        weights.update({k: v.float() for k, v in ema["shadow"].items()})
    model.load_state_dict(weights, strict=True)
    classes = read_classes(quickstart / "data" / "demo")
    tokenizer = state["hyper_parameters"]["tokenizer_path"]
    extra = {"ema": ema is not None, "global_step": int(state["global_step"])}
    return write_generator(model.eval(), output, tokenizer, classes=classes, extra=extra)


def train_variant(name: str, overrides: list[str], base: Path, quickstart: Path, work: Path, precision: str) -> Path:
    """``varkit train experiment=cca_var`` from ``base``; returns the exported model directory."""
    root = work / "runs" / name
    model = root / "runs" / "var-demo-cca" / "model"
    if (model / "config.json").is_file():
        logger.info("variant %s: already trained (%s)", name, model)
        return model
    data = quickstart / "data"
    command = [
        sys.executable,
        "-m",
        "varkit",
        "train",
        "experiment=cca_var",
        f"init_from={base}",
        f"paths.root={root}",
        f"tokenizer.path={quickstart / 'runs' / 'tokenizer-demo' / 'tokenizer'}",
        f"data.train_urls={data / 'demo_tokens' / 'train'}",
        f"data.val_urls={data / 'demo_tokens' / 'val'}",
        f"export.classes={data / 'demo' / 'classes.json'}",
        "trainer=cpu",
        f"trainer.precision={precision}",
        "trainer.enable_progress_bar=false",
        *overrides,
    ]
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with (root / "train.log").open("w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
    logger.info("variant %s trained in %.0f s", name, time.perf_counter() - started)
    return model


def generated_size(model_dir: Path) -> int:
    """The side of the images the generator makes (the validation images are compared at that size)."""
    from varkit.checkpoint.generator import load_generator
    from varkit.models.var import sample_images

    var, vqvae, _ = load_generator(model_dir)
    image = sample_images(var, vqvae, torch.tensor([0]), cfg=0.0, generator=torch.Generator().manual_seed(0))
    return int(image.shape[-1])


def real_statistics(extractor: Any, val_urls: str, image_size: int) -> tuple[np.ndarray, np.ndarray, float, int]:
    from varkit.data.shards import expand_urls
    from varkit.evaluation.features import extract_features
    from varkit.evaluation.metrics import gaussian_statistics
    from varkit.evaluation.shard_images import image_batches, iter_shard_samples

    samples = list(iter_shard_samples(expand_urls(val_urls), image_size))
    labels = torch.tensor([label for _, label in samples])
    pool, logits = extract_features(extractor, image_batches((image for image, _ in samples), 256))
    mu, sigma = gaussian_statistics(pool.numpy())
    accuracy = float((logits.argmax(dim=1) == labels).float().mean())
    return mu, sigma, accuracy, len(samples)


def evaluate(
    name: str, model_dir: Path, cfg: float, seed: int, args: argparse.Namespace, extractor: Any, real: tuple
) -> dict[str, Any]:
    from varkit.checkpoint.generator import load_generator
    from varkit.evaluation.features import extract_features
    from varkit.evaluation.metrics import frechet_distance, gaussian_statistics
    from varkit.evaluation.samples import class_labels, generate_samples
    from varkit.evaluation.shard_images import image_batches

    var, vqvae, _ = load_generator(model_dir)
    vqvae.decoder_to(torch.float32)
    labels = class_labels(list(range(int(var.num_classes))), args.per_class)
    sampling = {"cfg": cfg, "cfg_schedule": "linear", "top_k": 0, "top_p": 0.0, "temperature": 1.0, "smooth": False}
    images, timing = generate_samples(var, vqvae, labels, batch_size=args.batch_size, seed=seed, sampling=sampling)
    pool, logits = extract_features(extractor, image_batches(iter(images), 256))
    mu, sigma = gaussian_statistics(pool.numpy())
    fid = frechet_distance(mu, sigma, real[0], real[1])
    accuracy = float((logits.argmax(dim=1) == labels).float().mean())
    row = {
        "model": name,
        "cfg": cfg,
        "seed": seed,
        "fid": fid,
        "accuracy": accuracy,
        "seconds_per_image": timing.seconds_per_image,
        "images": len(labels),
    }
    logger.info("%s", row)
    return row


def interleaved_timing(model_dir: Path, cfgs: list[float], args: argparse.Namespace) -> dict[float, float]:
    """Median seconds per image of one batch at each guidance scale, the scales interleaved batch by batch so
    that a drifting machine load hits all of them alike (the ratio is the figure to read)."""
    from varkit.checkpoint.generator import load_generator
    from varkit.models.var import sample_images

    var, vqvae, _ = load_generator(model_dir)
    vqvae.decoder_to(torch.float32)
    labels = torch.arange(args.batch_size) % int(var.num_classes)
    times: dict[float, list[float]] = {cfg: [] for cfg in cfgs}
    for repeat in range(args.timing_repeats + 1):
        for cfg in cfgs:
            generator = torch.Generator().manual_seed(repeat)
            started = time.perf_counter()
            sample_images(var, vqvae, labels, generator=generator, cfg=cfg, cfg_schedule="linear")
            if repeat:  # the first round warms up
                times[cfg].append((time.perf_counter() - started) / len(labels))
    return {cfg: statistics.median(values) for cfg, values in times.items()}


def summarise(rows: list[dict[str, Any]], real_accuracy: float, real_count: int, args: argparse.Namespace) -> str:
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["cfg"]), []).append(row)
    reference_time = statistics.median(r["seconds_per_image"] for r in groups.get(("base", args.cfg), rows))
    seeds = " / ".join(str(s) for s in args.seeds)
    lines = [
        f"| model | guidance | FID (seeds {seeds}) | FID mean | class acc. | s / image "
        f"| time vs base@cfg{args.cfg:g} |",
        "|---|---|---|---|---|---|---|",
    ]
    for (model, cfg), members in groups.items():
        fids = [r["fid"] for r in members]
        seconds = statistics.median(r["seconds_per_image"] for r in members)
        accuracy = statistics.mean(r["accuracy"] for r in members)
        lines.append(
            f"| {model} | {cfg:g} | {' / '.join(f'{f:.2f}' for f in fids)} | {statistics.mean(fids):.2f} | "
            f"{100 * accuracy:.1f} % | {seconds:.4f} | {seconds / reference_time:.2f} |"
        )
    lines.append(f"| real val images ({real_count}) | — | — | — | {100 * real_accuracy:.1f} % | — | — |")
    return "\n".join(lines)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args()
    quickstart = args.quickstart.resolve()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    source = args.base or quickstart / "runs" / "var-demo" / "model"
    base = work / "base-model"
    if not (base / "config.json").is_file():
        if args.base_checkpoint is not None:
            export_checkpoint(args.base_checkpoint, quickstart, base)
        else:
            shutil.copytree(source, base)  # a copy: the quickstart's artefacts stay untouched
    models: dict[str, Path] = {} if args.skip_base else {"base": base}
    for spec in args.cca_model:
        name, _, directory = spec.partition("=")
        models[name] = Path(directory)
    if args.timing_only:
        medians = interleaved_timing(base, [0.0, args.cfg], args)
        table = (
            f"| guidance | s / image (median of {args.timing_repeats} interleaved batches of {args.batch_size}) "
            f"| vs cfg {args.cfg:g} |\n|---|---|---|\n"
        )
        table += "\n".join(f"| {c:g} | {t:.4f} | {t / medians[args.cfg]:.2f} |" for c, t in medians.items())
        (work / "timing.md").write_text(table + "\n")
        sys.stdout.write(table + "\n")
        return
    for variant in args.variant or [["preset"]]:
        name, overrides = variant[0], variant[1:]
        if args.no_train:
            existing = work / "runs" / name / "runs" / "var-demo-cca" / "model"
            if (existing / "config.json").is_file():
                models[f"cca {name}"] = existing
            continue
        models[f"cca {name}"] = train_variant(name, overrides, base, quickstart, work, args.train_precision)

    from varkit.evaluation.extractors import build_extractor

    data = quickstart / "data" / "demo"
    extractor = build_extractor({"name": "tiny", "fit_on": str(data / "train")})  # = evaluator=tiny_demo
    image_size = generated_size(base)
    real = real_statistics(extractor, str(data / "val"), image_size)
    rows: list[dict[str, Any]] = []
    for name, directory in models.items():
        for cfg in (0.0, args.cfg):
            for seed in args.seeds:
                rows.append(evaluate(name, directory, cfg, seed, args, extractor, real[:2]))
    table = summarise(rows, real[2], real[3], args)
    (work / "results.json").write_text(json.dumps({"rows": rows, "real_accuracy": real[2]}, indent=2) + "\n")
    (work / "results.md").write_text(table + "\n")
    sys.stdout.write(table + "\n")


if __name__ == "__main__":
    main()
