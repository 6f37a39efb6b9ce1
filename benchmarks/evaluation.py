"""Evaluation cost benchmark: metric maths at ImageNet-evaluation sizes and feature-extractor throughput.

What a 50k-sample evaluation (VAR paper §5, ADM protocol) costs beyond sampling: FID's matrix square root on
2048-d statistics, KID (100 subsets of 1000), precision/recall (k = 3) on n×n distances, and feature extraction
with the FID Inception network (random weights: the speed does not depend on them) and the ``tiny`` extractor.
Prints a table of medians.

    python benchmarks/evaluation.py                    # CPU, 2 threads, small n for precision/recall
    python benchmarks/evaluation.py --device cuda --pr-samples 50000 --batch 200
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from varkit.evaluation import InceptionV3FID, TinyExtractor, metrics


def median_seconds(fn: Callable[[], object], repeats: int, device: str) -> float:
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dim", type=int, default=2048, help="feature dimension (2048 for Inception pool_3)")
    parser.add_argument("--pr-samples", type=int, default=2000, help="samples per side for precision/recall")
    parser.add_argument("--batch", type=int, default=16, help="images per extractor batch")
    parser.add_argument("--image-size", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    rows: list[tuple[str, str, float]] = []

    real = rng.normal(size=(4 * args.dim, args.dim))
    fake = rng.normal(size=(4 * args.dim, args.dim)) + 0.1
    stats_real, stats_fake = metrics.gaussian_statistics(real), metrics.gaussian_statistics(fake)
    seconds = median_seconds(lambda: metrics.frechet_distance(*stats_real, *stats_fake), args.repeats, "cpu")
    rows.append((f"FID from statistics (d={args.dim})", "s", seconds))
    seconds = median_seconds(lambda: metrics.gaussian_statistics(real), args.repeats, "cpu")
    rows.append((f"mean+covariance of {len(real)} x {args.dim}", "s", seconds))
    seconds = median_seconds(
        lambda: metrics.kernel_inception_distance(real, fake, subsets=100, subset_size=1000), args.repeats, "cpu"
    )
    rows.append(("KID, 100 subsets of 1000", "s", seconds))
    n = args.pr_samples
    pr_real, pr_fake = rng.normal(size=(n, args.dim)), rng.normal(size=(n, args.dim))
    seconds = median_seconds(
        lambda: metrics.precision_recall(pr_real, pr_fake, device=args.device), args.repeats, args.device
    )
    rows.append((f"precision/recall k=3, {n} vs {n} ({args.device})", "s", seconds))

    images = torch.randint(0, 256, (args.batch, 3, args.image_size, args.image_size), dtype=torch.uint8)
    images = images.to(args.device)
    for name, extractor in (("inception_fid (random weights)", InceptionV3FID()), ("tiny", TinyExtractor())):
        extractor = extractor.to(args.device)
        with torch.inference_mode():
            extractor(images)  # warm-up
            seconds = median_seconds(lambda e=extractor: e(images), args.repeats, args.device)
        rows.append(
            (f"{name}, {args.image_size}px, batch {args.batch} ({args.device})", "images/s", args.batch / seconds)
        )

    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}}  {'median':>12}  unit")
    for what, unit, value in rows:
        print(f"{what:<{width}}  {value:>12.4g}  {unit}")


if __name__ == "__main__":
    main()
