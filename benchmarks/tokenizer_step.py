"""One tokenizer training step (forward, loss, backward, AdamW) per preset and precision: medians of several runs.

    python benchmarks/tokenizer_step.py --preset vqvae_demo --batch 8 --repeats 5

Prints seconds per step and images per second for float32 and bf16 autocast (the trainer's ``32-true`` and
``bf16-mixed``), the two choices for ``trainer.precision``; run it on a quiet machine (ratios are what matter).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from varkit.models.vqvae import vqvae_preset
from varkit.training.losses import reconstruction_loss


def step_seconds(preset: str, batch: int, precision: str, repeats: int, warmup: int, image_size: int | None) -> float:
    overrides = {"image_size": image_size} if image_size else {}
    vae = vqvae_preset(preset, **overrides)
    size = vae.image_size
    images = torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-4)
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            reconstructions, quantized = vae(images)
            loss = reconstruction_loss(reconstructions, images) + quantized.loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="vqvae_demo")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=None, help="override the preset's image size")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'preset':<12} {'batch':>5} {'precision':>9} {'s/step':>8} {'img/s':>8}")
    for precision in ("fp32", "bf16"):
        seconds = step_seconds(args.preset, args.batch, precision, args.repeats, args.warmup, args.image_size)
        print(f"{args.preset:<12} {args.batch:>5} {precision:>9} {seconds:>8.3f} {args.batch / seconds:>8.1f}")


if __name__ == "__main__":
    main()
