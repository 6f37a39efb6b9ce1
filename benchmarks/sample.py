"""Benchmark: class-conditional sampling with the VAR transformer (+ VQ-VAE decode), random weights.

VAR-dN shape (depth N, width 64N, N heads, QK-L2 norm, 1000 classes, 4096 codes, var_256 scales = 680 tokens),
classifier-free guidance with the linear ramp, top-k 900 / top-p 0.96 (the reference's defaults). Each variant runs
in its own subprocess so its peak memory (max RSS) is its own. Prints median wall times of several runs.

    python benchmarks/sample.py                      # d16: batch 1 and batch 16, fp32 / autocast / bf16 weights
    python benchmarks/sample.py --depth 16 --batch 1 --variants bf16 --runs 5
    python benchmarks/sample.py --no-decode          # transformer only

Variants: ``fp32`` (float32 weights), ``autocast`` (float32 weights under CPU bf16 autocast, what the reference
does), ``bf16`` (bf16 weights, no autocast), ``bf16-compile`` (bf16 weights, blocks compiled with torch.compile).
Decoding uses the ``vqvae_f16`` decoder in channels-last memory (``VQVAE.decoder_to``, as ``varkit sample`` does):
float32 weights for ``fp32``, bf16 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import torch

VARIANTS = ("fp32", "autocast", "bf16", "bf16-compile")


def transformer_flops(depth: int, width: int, token_counts: list[int], rows: int, vocab: int = 4096) -> float:
    """Multiply-adds x 2 of one KV-cached sampling pass: linear layers, attention over the cache, head."""
    total, context = 0.0, 0
    for n in token_counts:
        context += n
        per_token = depth * (24 * width * width + 4 * context * width) + 2 * width * vocab
        total += rows * n * per_token
    return total


def _build(depth: int, variant: str, decode: bool) -> tuple[Any, Any, Any]:
    import varkit
    import varkit.quantizers  # noqa: F401
    from varkit.models.var import VAR
    from varkit.models.var_presets import official_shape

    torch.manual_seed(0)
    var = VAR(**{**official_shape(depth), "drop_path": 0.0, "class_dropout": 0.0}).eval()
    if decode:
        from varkit.models.vqvae import vqvae_preset

        vqvae = vqvae_preset("vqvae_f16").eval()
        vqvae.decoder_to(torch.float32 if variant == "fp32" else torch.bfloat16)  # channels-last (varkit sample)
        quantizer = vqvae.quantizer
    else:
        from varkit.quantizers.msvq import MultiScaleVQ

        vqvae, quantizer = None, MultiScaleVQ(codebook_size=4096, code_dim=32).eval()
    if variant.startswith("bf16"):
        var.to(torch.bfloat16)
    if variant == "bf16-compile":
        for block in var.blocks:
            block.compile(dynamic=True)
    return var, quantizer, vqvae


def run_one(depth: int, batch: int, variant: str, runs: int, decode: bool, cfg: float) -> dict[str, Any]:
    torch.set_num_threads(2)
    var, quantizer, vqvae = _build(depth, variant, decode)
    labels = torch.arange(batch) * 37 % 1000
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if variant == "autocast" else contextlib.nullcontext()

    def once(seed: int) -> tuple[float, float]:
        gen = torch.Generator().manual_seed(seed)
        start = time.perf_counter()
        with torch.inference_mode(), autocast:
            out = var.generate(labels, quantizer, cfg=cfg, top_k=900, top_p=0.96, generator=gen)
        middle = time.perf_counter()
        if vqvae is not None:
            with torch.inference_mode():
                images = vqvae.decode_latents(out.latent)
            assert images.shape == (batch, 3, 256, 256)
        return middle - start, time.perf_counter() - middle

    once(0)  # warm-up (allocator, oneDNN primitive caches, compilation)
    cpu0 = time.process_time()
    times = [once(seed) for seed in range(1, runs + 1)]
    cpu_per_run = (time.process_time() - cpu0) / runs
    gen_times, dec_times = [t[0] for t in times], [t[1] for t in times]
    scales = var.scales
    flops = transformer_flops(depth, var.width, list(scales.token_counts), rows=2 * batch if cfg else batch)
    gen_median = statistics.median(gen_times)
    return {
        "depth": depth,
        "batch": batch,
        "variant": variant,
        "transformer_s": gen_median,
        "decode_s": statistics.median(dec_times),
        "total_s": statistics.median(g + d for g, d in times),
        "per_image_s": statistics.median(g + d for g, d in times) / batch,
        "cpu_s": cpu_per_run,
        "gflops": flops / gen_median / 1e9,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "runs": runs,
    }


def levers(depth: int, batch: int, runs: int) -> None:
    """CPU seconds of what two structural levers avoid, per sampling call (VAR-dN shape, CFG rows = 2 x batch).

    * adaLN once: the reference recomputes every block's adaLN projection at each of the K scales; varkit does it
      once per call (the condition does not change), saving K - 1 evaluations.
    * pre-allocated KV cache: the reference re-concatenates each layer's whole cache at every scale; varkit writes
      only the new keys/values into buffers sized for the sequence.
    """
    torch.set_num_threads(2)
    import varkit  # noqa: F401
    from varkit.models.var import VAR
    from varkit.models.var_presets import official_shape
    from varkit.nn.attention import KVCache

    torch.manual_seed(0)
    var = VAR(**{**official_shape(depth), "drop_path": 0.0, "class_dropout": 0.0}).eval()
    rows, heads, head_dim = 2 * batch, var.num_heads, var.width // var.num_heads
    counts = list(var.scales.token_counts)

    def cpu_median(fn: Any) -> float:
        fn()
        samples = []
        for _ in range(runs):
            start = time.process_time()
            fn()
            samples.append(time.process_time() - start)
        return statistics.median(samples)

    cond = torch.randn(rows, var.width)
    with torch.inference_mode():
        adaln = cpu_median(lambda: var.block_modulations(cond))
        new = [torch.randn(rows, heads, n, head_dim) for n in counts]

        def concat() -> None:
            for _ in range(depth):
                keys = values = None
                for chunk in new:
                    keys = chunk if keys is None else torch.cat((keys, chunk), dim=2)
                    values = chunk if values is None else torch.cat((values, chunk), dim=2)

        def preallocated() -> None:
            for _ in range(depth):
                cache = KVCache(rows, heads, sum(counts), head_dim, dtype=torch.float32, device="cpu")
                for chunk in new:
                    cache.append(chunk, chunk)

        cat_s, pre_s = cpu_median(concat), cpu_median(preallocated)
    k = len(counts)
    print(f"VAR-d{depth}, batch {batch} (CFG rows {rows}), CPU seconds per sampling call, median of {runs}")
    print(f"adaLN projections: once {adaln:.3f} s vs per scale {k * adaln:.3f} s -> saves {(k - 1) * adaln:.3f} s")
    print(f"KV cache: concatenate {cat_s:.3f} s vs pre-allocated {pre_s:.3f} s -> saves {cat_s - pre_s:.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--variants", nargs="+", default=["fp32", "autocast", "bf16"], choices=VARIANTS)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cfg", type=float, default=1.5)
    parser.add_argument("--no-decode", action="store_true")
    parser.add_argument("--levers", action="store_true", help="measure what adaLN-once and the KV cache save")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    decode = not args.no_decode
    if args.levers:
        for batch in args.batch:
            levers(args.depth, batch, args.runs)
        return
    if args.child:
        row = run_one(args.depth, args.batch[0], args.variants[0], args.runs, decode, args.cfg)
        print("RESULT " + json.dumps(row), flush=True)
        return
    print(
        f"VAR-d{args.depth} sampling, 256px, cfg={args.cfg}, top-k 900 / top-p 0.96, 2 threads, "
        f"median of {args.runs} runs{'' if decode else ' (no decode)'}"
    )
    header = f"{'batch':>5} {'variant':>13} {'transformer s':>13} {'decode s':>9} {'total s':>8} {'per image s':>11}"
    print(header + f" {'CPU s':>7} {'GFLOP/s':>8} {'peak RSS GiB':>12}")
    for batch in args.batch:
        for variant in args.variants:
            cmd = [sys.executable, __file__, "--child", "--depth", str(args.depth), "--batch", str(batch)]
            cmd += ["--variants", variant, "--runs", str(args.runs), "--cfg", str(args.cfg)]
            cmd += [] if decode else ["--no-decode"]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode or not lines:
                print(f"{batch:>5} {variant:>13} FAILED: {proc.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(lines[-1].removeprefix("RESULT "))
            print(
                f"{batch:>5} {variant:>13} {r['transformer_s']:>13.3f} {r['decode_s']:>9.3f} {r['total_s']:>8.3f} "
                f"{r['per_image_s']:>11.3f} {r['cpu_s']:>7.2f} {r['gflops']:>8.0f} {r['peak_rss_gib']:>12.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
