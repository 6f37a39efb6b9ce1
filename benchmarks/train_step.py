"""Benchmark: one teacher-forced AdamW step of the VAR transformer (forward, cross-entropy, backward, update).

VAR-dN shape (depth N, width 64N, N heads, QK-L2 norm, 1000 classes, 4096 codes, var_256 scales = 680 tokens),
random weights and random teacher-forcing inputs/targets. Each variant runs in its own subprocess (own peak RSS).

    python benchmarks/train_step.py                         # d6 and d16, batch 4, fp32 and bf16 autocast
    python benchmarks/train_step.py --depth 6 --variants fp32 --runs 5

Variants: ``fp32``; ``autocast`` (float32 master weights under CPU bf16 autocast); ``*-foreach`` uses the foreach
AdamW instead of the fused one; ``*-compile`` compiles each block with ``torch.compile`` (one graph shared by all
blocks; the first, compiling step is excluded from the timings).
``fp32-aten`` / ``fp32-onednn`` pin the training linears' CPU backend (``VARKIT_TRAIN_LINEAR``; plain ``fp32`` uses
``auto``, which probes once). ``--attention`` picks the kernel spec (``sdpa`` dense mask by default).
``--shape quickstart`` times the quickstart's transformer instead (depth 6, width 192, 10 classes, 512 codes of
dim 16, scales 1..8 = 130 tokens; use ``--batch 32`` as the quickstart does)::

    python benchmarks/train_step.py --shape quickstart --batch 32 --variants fp32-aten fp32 autocast --runs 10
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

VARIANTS = (
    "fp32",
    "autocast",
    "fp32-foreach",
    "autocast-foreach",
    "fp32-compile",
    "autocast-compile",
    "fp32-aten",
    "fp32-onednn",
)
#: the transformer of ``varkit quickstart`` (experiment=quickstart on the demo tokens): ``--shape quickstart``
QUICKSTART_SHAPE: dict[str, Any] = {
    "num_classes": 10,
    "depth": 6,
    "width": 192,
    "num_heads": 4,
    "codebook_size": 512,
    "code_dim": 16,
    "scales": [1, 2, 3, 4, 6, 8],
    "qk_l2_norm": True,
    "drop_path": 0.025,
}


def step_flops(depth: int, width: int, tokens: int, batch: int, vocab: int = 4096) -> float:
    """2 x multiply-adds of forward + backward (3x forward), dense attention over all ``tokens``."""
    forward = batch * tokens * (depth * (24 * width * width + 4 * tokens * width) + 2 * width * vocab)
    return 3.0 * forward


def run_one(depth: int, batch: int, variant: str, runs: int, attention: str, shape: str = "official") -> dict[str, Any]:
    torch.set_num_threads(2)
    import varkit  # noqa: F401
    from varkit.models.var import VAR
    from varkit.models.var_presets import official_shape
    from varkit.nn.cpu_linear import set_train_linear_backend, train_linear_backend

    set_train_linear_backend(variant.split("-")[1] if variant in ("fp32-aten", "fp32-onednn") else "auto")
    torch.manual_seed(0)
    config = QUICKSTART_SHAPE if shape == "quickstart" else official_shape(depth)
    model = VAR(**{**config, "attention": attention}).train()
    if variant.endswith("compile"):
        for block in model.blocks:
            block.compile()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=1e-4, weight_decay=0.05, betas=(0.9, 0.95), fused=not variant.endswith("foreach")
    )
    total = model.scales.total_tokens
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, int(model.num_classes), (batch,), generator=gen)
    inputs = torch.randn(batch, total - model.scales.first_tokens, model.word_embedding.in_features, generator=gen)
    targets = torch.randint(0, model.head.out_features, (batch, total), generator=gen)
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
        "depth": model.depth,
        "batch": batch,
        "variant": variant,
        "linears": train_linear_backend(),
        "step_s": median,
        "cpu_s": cpu_per_step,
        "gflops": step_flops(model.depth, model.width, total, batch, model.head.out_features) / median / 1e9,
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
    parser.add_argument("--shape", choices=["official", "quickstart"], default="official")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        row = run_one(args.depth[0], args.batch, args.variants[0], args.runs, args.attention, args.shape)
        print("RESULT " + json.dumps(row), flush=True)
        return
    tokens = "130 tokens (quickstart shape)" if args.shape == "quickstart" else "680 tokens"
    print(f"VAR teacher-forced AdamW step, batch {args.batch}, {tokens}, 2 threads, median of {args.runs} runs")
    depths = [6] if args.shape == "quickstart" else args.depth
    header = f"{'model':>6} {'variant':>16} {'linears':>8} {'params M':>8} {'step s':>8} {'CPU s':>7}"
    print(header + f" {'GFLOP/s':>8} {'peak RSS GiB':>12}")
    for depth in depths:
        for variant in args.variants:
            cmd = [sys.executable, __file__, "--child", "--depth", str(depth), "--batch", str(args.batch)]
            cmd += ["--variants", variant, "--runs", str(args.runs), "--attention", args.attention]
            cmd += ["--shape", args.shape]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode or not lines:
                print(f"{'d' + str(depth):>6} {variant:>16} FAILED: {proc.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(lines[-1].removeprefix("RESULT "))
            print(
                f"{'d' + str(depth):>6} {variant:>16} {r['linears']:>8} {r['params_m']:>8.1f} {r['step_s']:>8.3f} "
                f"{r['cpu_s']:>7.2f} "
                f"{r['gflops']:>8.0f} {r['peak_rss_gib']:>12.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
