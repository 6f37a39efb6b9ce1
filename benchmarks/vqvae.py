"""VQVAE decode/encode speed at the released tokenizer's shape (``vqvae_f16``: ch=160, 256px, 16x16 latents).

Compares the decoder in float32, under bf16 autocast (float32 weights, what the reference does) and with bf16
weights in channels-last memory (``VQVAE.decoder_to(torch.bfloat16)``), and the encoder + multi-scale
quantization (``tokenize``) in float32 and under bf16 autocast. Prints medians of several runs, seconds per image.

    python benchmarks/vqvae.py                       # 2 threads, batch 1, 5 repeats
    python benchmarks/vqvae.py --batch 4 --repeats 3 --threads 2 --preset vqvae_demo
    python benchmarks/vqvae.py --reference /work/varref   # also time the official decoder, interleaved

Reference (official code, 2 quiet cores with AMX): 1.63 s fp32 / 0.58 s bf16 autocast per decoded 256px image.
bf16 only pays off on CPUs with native bf16 (AMX / AVX512-BF16); the table's header says what this CPU has.
With ``--reference`` the official decoder (random weights of the same shape) runs alternately with varkit's,
so the ratio stays meaningful on a busy machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from collections.abc import Callable
from pathlib import Path

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


def cpu_bf16_support() -> str:
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    found = sorted(flags & {"amx_bf16", "avx512_bf16"})
    return ", ".join(found) if found else "none (bf16 is emulated: expect it slower than fp32)"


def official_decoder(reference: Path, vae: torch.nn.Module) -> torch.nn.Module:
    """The reference Decoder of the same shape (random weights), loaded from its checkout without its package."""
    spec = importlib.util.spec_from_file_location("official_basic_vae", reference / "models" / "basic_vae.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = vae.config["tokenizer"]  # type: ignore[index]
    return module.Decoder(
        ch=config["base_channels"],
        ch_mult=tuple(config["channel_multipliers"]),
        num_res_blocks=config["decoder_blocks"] - 1,
        z_channels=vae.latent_channels,
        using_sa=config["lowest_level_attention"],
        using_mid_sa=config["middle_attention"],
    ).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="vqvae_f16")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-encode", action="store_true")
    parser.add_argument("--reference", type=Path, default=None, help="official VAR checkout to compare against")
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
        if args.reference is not None:
            official = official_decoder(args.reference, vae)
            post = vae.post_quant_conv
            ours, theirs = [], []
            for _ in range(args.repeats):
                ours.append(median_seconds(lambda: vae.decode_latents(latents), 1, warmup=0))
                theirs.append(median_seconds(lambda: official(post(latents)).clamp(-1, 1), 1, warmup=0))
            rows.append(("decode fp32, official code (interleaved)", statistics.median(theirs)))
            rows.append(("decode fp32, varkit (interleaved)", statistics.median(ours)))
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
        vae.decoder_to(torch.float32)
        rows.append(("decode fp32 channels_last", median_seconds(lambda: vae.decode_latents(latents), args.repeats)))
        vae.decoder_to(torch.bfloat16)
        rows.append(
            ("decode bf16 weights + channels_last", median_seconds(lambda: vae.decode_latents(latents), args.repeats))
        )
        error = (vae.decode_latents(latents) - reference).abs().max().item()

    print(
        f"{args.preset}: {height}x{width} images, batch {args.batch}, {args.threads} threads, median of {args.repeats}"
    )
    print(f"native bf16 on this CPU: {cpu_bf16_support()}")
    print(f"{'what':40s} {'s/batch':>9s} {'s/image':>9s} {'speed-up':>9s}")
    base = next(seconds for name, seconds in rows if name == "decode fp32")
    for name, seconds in rows:
        speedup = f"{base / seconds:8.2f}x" if name.startswith("decode") else ""
        print(f"{name:40s} {seconds:9.3f} {seconds / args.batch:9.3f} {speedup:>9s}")
    print(f"max |bf16-weights decode - fp32 decode| = {error:.4f} (images in [-1, 1])")


if __name__ == "__main__":
    main()
