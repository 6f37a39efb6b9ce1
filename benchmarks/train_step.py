"""Benchmark: one teacher-forced AdamW step of the VAR transformer (forward, cross-entropy, backward, update).

VAR-dN shape (depth N, width 64N, N heads, QK-L2 norm, 1000 classes, 4096 codes, var_256 scales = 680 tokens),
random weights and random teacher-forcing inputs/targets. Each variant runs in its own subprocess (own peak RSS).

    python benchmarks/train_step.py                         # d6 and d16, batch 4, fp32 and bf16 autocast
    python benchmarks/train_step.py --depth 6 --variants fp32 --runs 5

Variants: ``fp32``; ``autocast`` (float32 master weights under CPU bf16 autocast); ``*-foreach`` uses the foreach
AdamW instead of the fused one; ``*-compile`` compiles each block with ``torch.compile`` (one graph shared by all
blocks; the first, compiling step is excluded from the timings).
``--attention`` picks the kernel spec (``sdpa`` dense mask by default).
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
import torch.nn.functional as F

VARIANTS = ("fp32", "autocast", "fp32-foreach", "autocast-foreach", "fp32-compile", "autocast-compile")


def step_flops(depth: int, width: int, tokens: int, batch: int, vocab: int = 4096) -> float:
    """2 x multiply-adds of forward + backward (3x forward), dense attention over all ``tokens``."""
    forward = batch * tokens * (depth * (24 * width * width + 4 * tokens * width) + 2 * width * vocab)
    return 3.0 * forward


def run_one(depth: int, batch: int, variant: str, runs: int, attention: str) -> dict[str, Any]:
    torch.set_num_threads(2)
    import varkit  # noqa: F401
    from varkit.models.var import VAR
    from varkit.models.var_presets import official_shape

    torch.manual_seed(0)
    model = VAR(**{**official_shape(depth), "attention": attention}).train()
    if variant.endswith("compile"):
        for block in model.blocks:
            block.compile()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=1e-4, weight_decay=0.05, betas=(0.9, 0.95), fused=not variant.endswith("foreach")
    )
    total = model.scales.total_tokens
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 1000, (batch,), generator=gen)
    inputs = torch.randn(batch, total - model.scales.first_tokens, 32, generator=gen)
    targets = torch.randint(0, 4096, (batch, total), generator=gen)
    autocast = (
        torch.autocast("cpu", dtype=torch.bfloat16) if variant.startswith("autocast") else contextlib.nullcontext()
    )

    def once() -> float:
        start = time.perf_counter()
        with autocast:
            logits = model(labels, inputs, generator=gen)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    once()  # warm-up (optimizer state allocation, oneDNN caches)
    cpu0 = time.process_time()
    times = [once() for _ in range(runs)]
    cpu_per_step = (time.process_time() - cpu0) / runs
    median = statistics.median(times)
    return {
        "depth": depth,
        "batch": batch,
        "variant": variant,
        "step_s": median,
        "cpu_s": cpu_per_step,
        "gflops": step_flops(depth, model.width, total, batch) / median / 1e9,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "params_m": model.num_parameters() / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, nargs="+", default=[6, 16])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--variants", nargs="+", default=["fp32", "autocast"], choices=VARIANTS)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--attention", default="sdpa")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        row = run_one(args.depth[0], args.batch, args.variants[0], args.runs, args.attention)
        print("RESULT " + json.dumps(row), flush=True)
        return
    print(f"VAR teacher-forced AdamW step, batch {args.batch}, 680 tokens, 2 threads, median of {args.runs} runs")
    header = f"{'model':>6} {'variant':>16} {'params M':>8} {'step s':>8} {'CPU s':>7}"
    print(header + f" {'GFLOP/s':>8} {'peak RSS GiB':>12}")
    for depth in args.depth:
        for variant in args.variants:
            cmd = [sys.executable, __file__, "--child", "--depth", str(depth), "--batch", str(args.batch)]
            cmd += ["--variants", variant, "--runs", str(args.runs), "--attention", args.attention]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode or not lines:
                print(f"{'d' + str(depth):>6} {variant:>16} FAILED: {proc.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(lines[-1].removeprefix("RESULT "))
            print(
                f"{'d' + str(depth):>6} {variant:>16} {r['params_m']:>8.1f} {r['step_s']:>8.3f} {r['cpu_s']:>7.2f} "
                f"{r['gflops']:>8.0f} {r['peak_rss_gib']:>12.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
