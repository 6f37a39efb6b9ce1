"""VQVAE decode/encode speed at the released tokenizer's shape (``vqvae_f16``: ch=160, 256px, 16x16 latents).

Compares the decoder in float32, under bf16 autocast (float32 weights, what the reference does) and with bf16
weights in channels-last memory (``VQVAE.decoder_to(torch.bfloat16)``), and the encoder + multi-scale
quantization (``tokenize``) in float32 and under bf16 autocast. Prints medians of several runs, seconds per image.

    python benchmarks/vqvae.py                       # 2 threads, batch 1, 5 repeats
    python benchmarks/vqvae.py --batch 4 --repeats 3 --threads 2 --preset vqvae_demo

Reference (official code, 2 quiet cores): 1.63 s fp32 / 0.58 s bf16 autocast per decoded 256px image.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from varkit.models.vqvae import vqvae_preset


def median_seconds(run: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="vqvae_f16")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-encode", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    vae = vqvae_preset(args.preset).eval().requires_grad_(False)
    height, width = vae.image_size
    images = torch.rand(args.batch, 3, height, width, generator=torch.Generator().manual_seed(0)) * 2 - 1
    tokens = vae.tokenize(images)
    latents = vae.quantizer.decode(tokens, vae.scales)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16)

    rows: list[tuple[str, float]] = []
    with torch.inference_mode():
        rows.append(("decode fp32", median_seconds(lambda: vae.decode_latents(latents), args.repeats)))

        def decode_autocast() -> torch.Tensor:
            with autocast:
                return vae.decode_latents(latents)

        rows.append(("decode bf16 autocast", median_seconds(decode_autocast, args.repeats)))
        if not args.skip_encode:
            rows.append(("tokenize fp32", median_seconds(lambda: vae.tokenize(images), args.repeats)))

            def tokenize_autocast() -> list[torch.Tensor]:
                with autocast:
                    return vae.tokenize(images)

            rows.append(("tokenize bf16 autocast", median_seconds(tokenize_autocast, args.repeats)))
        reference = vae.decode_latents(latents)
        vae.decoder_to(torch.bfloat16)
        rows.append(
            ("decode bf16 weights + channels_last", median_seconds(lambda: vae.decode_latents(latents), args.repeats))
        )
        error = (vae.decode_latents(latents) - reference).abs().max().item()

    print(
        f"{args.preset}: {height}x{width} images, batch {args.batch}, {args.threads} threads, median of {args.repeats}"
    )
    print(f"{'what':40s} {'s/batch':>9s} {'s/image':>9s} {'speed-up':>9s}")
    base = rows[0][1]
    for name, seconds in rows:
        speedup = f"{base / seconds:8.2f}x" if name.startswith("decode") else ""
        print(f"{name:40s} {seconds:9.3f} {seconds / args.batch:9.3f} {speedup:>9s}")
    print(f"max |bf16-weights decode - fp32 decode| = {error:.4f} (images in [-1, 1])")


if __name__ == "__main__":
    main()
