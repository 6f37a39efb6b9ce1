"""Attention kernel benchmark at VAR shapes (VAR Sec. 3.2: block-causal attention over 680 tokens at 256px).

Times every kernel variant available on the device, in forward (no grad), forward+backward (training, with the
block-causal mask) and KV-cached sampling (the last scale's queries against all 680 keys, no mask); prints a
table of medians.

    python benchmarks/attention.py                       # CPU, VAR-d16 shapes, fp32 and bf16
    python benchmarks/attention.py --device cuda --shapes d16 d30
    python benchmarks/attention.py --batch 2 --repeats 3 --kernels sdpa sdpa-per-scale

Shapes: d16 = 16 heads x 64, d30 = 30 heads x 64 (the VAR-d16 / VAR-d30 transformers), batch 8 by default.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

import varkit  # noqa: F401  (registers the kernels)
from varkit import ATTENTION_KERNELS, SCALE_SCHEDULES, BlockCausalMask
from varkit.contracts import CapabilityError

SHAPES = {"d16": (16, 64), "d20": (20, 64), "d24": (24, 64), "d30": (30, 64)}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
VARIANTS: dict[str, dict[str, Any]] = {
    "eager": {"name": "eager"},
    "sdpa": {"name": "sdpa"},
    "sdpa-per-scale": {"name": "sdpa", "mask_strategy": "per_scale"},
    "sdpa-math": {"name": "sdpa", "backend": "math"},
    "sdpa-flash": {"name": "sdpa", "backend": "flash"},
    "sdpa-flash-per-scale": {"name": "sdpa", "backend": "flash", "mask_strategy": "per_scale"},
    "sdpa-efficient": {"name": "sdpa", "backend": "efficient"},
    "sdpa-cudnn-per-scale": {"name": "sdpa", "backend": "cudnn", "mask_strategy": "per_scale"},
    "flex": {"name": "flex", "compile": False},
    "flex-compiled": {"name": "flex", "compile": True},
    "flash": {"name": "flash"},
    "auto": {"name": "auto"},
}
CPU_DEFAULT = ["eager", "sdpa", "sdpa-per-scale", "sdpa-math", "sdpa-flash", "flex", "auto"]
CUDA_DEFAULT = [v for v in VARIANTS if v != "sdpa-math"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_ms(run: Callable[[], None], device: torch.device, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        run()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def bench_one(
    kernel: Any,
    mode: str,
    batch: int,
    heads: int,
    head_dim: int,
    dtype: torch.dtype,
    device: torch.device,
    warmup: int,
    repeats: int,
) -> str:
    scales = SCALE_SCHEDULES.build("var_256")
    mask = BlockCausalMask(scales)
    length = scales.total_tokens
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, heads, length, head_dim, generator=g).to(device, dtype) for _ in range(3))
    if mode == "fwd":

        def run() -> None:
            with torch.no_grad():
                kernel(q, k, v, mask=mask)
    elif mode == "fwd+bwd":
        leaves = [t.detach().requires_grad_(True) for t in (q, k, v)]
        grad = torch.randn_like(q)

        def run() -> None:
            for t in leaves:
                t.grad = None
            kernel(*leaves, mask=mask).backward(grad)
    else:  # KV-cached sampling step at the finest scale: no mask needed
        last = scales.token_counts[-1]

        def run() -> None:
            with torch.no_grad():
                kernel(q[:, :, -last:], k, v)

    try:
        return f"{_median_ms(run, device, warmup, repeats):9.1f}"
    except CapabilityError as err:
        what = str(err).split("does not support ")[-1].split(" (")[0]
        return f"{'n/a: ' + what:>9}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--shapes", nargs="+", default=None, choices=sorted(SHAPES))
    parser.add_argument("--dtypes", nargs="+", default=None, choices=sorted(DTYPES))
    parser.add_argument("--kernels", nargs="+", default=None, choices=sorted(VARIANTS))
    parser.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd", "kv"], choices=["fwd", "fwd+bwd", "kv"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (the dev machine has 2 shared cores)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    shapes = args.shapes or (["d16"] if device.type == "cpu" else ["d16", "d30"])
    dtypes = args.dtypes or (["fp32", "bf16"] if device.type == "cpu" else ["fp32", "bf16", "fp16"])
    variants = args.kernels or (CPU_DEFAULT if device.type == "cpu" else CUDA_DEFAULT)

    print(
        f"# attention on {device} ({torch.__version__}), batch {args.batch}, var_256 (680 tokens), "
        f"median of {args.repeats} ms; kv = last scale's 256 queries x 680 keys, no mask"
    )
    header = f"| {'shape':5} | {'dtype':5} | {'kernel':22} | " + " | ".join(f"{m:>9}" for m in args.modes) + " |"
    print(header)
    print("|" + "|".join("-" * (len(c) + 0) for c in header.split("|")[1:-1]) + "|")
    for shape in shapes:
        heads, head_dim = SHAPES[shape]
        for dtype_name in dtypes:
            for variant in variants:
                kernel = ATTENTION_KERNELS.build(VARIANTS[variant])
                if not getattr(kernel, "available", lambda: True)():
                    cells = [f"{'n/a: pkg':>9}"] * len(args.modes)
                else:
                    cells = [
                        bench_one(
                            kernel,
                            mode,
                            args.batch,
                            heads,
                            head_dim,
                            DTYPES[dtype_name],
                            device,
                            args.warmup,
                            args.repeats,
                        )
                        for mode in args.modes
                    ]
                print(f"| {shape:5} | {dtype_name:5} | {variant:22} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
