"""Every GPU number varkit needs, in one run (under 10 minutes on one H100/H200-class GPU).

1. Training: VAR-d16 and VAR-d30 shapes, bf16 autocast, batch 32, AdamW; tokens/s and MFU (model FLOPs from
   :func:`varkit.models.flops.training_flops_per_sample` over the device's peak bf16 throughput).
2. Sampling: VAR-d16 shape, bf16 weights, batch 64, guidance cfg 1.5 (linear ramp), top-k 900 / top-p 0.96,
   256 px decode included; images/s for the exact sampler and the best stack (``conf/sampling/fast.yaml``).
3. Attention kernels: every registered kernel that runs on the device against the eager reference, bf16, VAR-d16
   heads over the 680-token block-causal sequence (teacher forcing) and the last scale against the full cache
   (sampling): max abs difference and milliseconds per call.

    python benchmarks/gpu_check.py                    # on a CUDA machine; prints the tables for the README
    python benchmarks/gpu_check.py --dry-run          # tiny shapes on the CPU (seconds; what the tests run)
    python benchmarks/gpu_check.py --json out.json    # also the raw numbers

Weights are random (speed and agreement do not depend on training). Times are medians after warm-up, with
``torch.cuda.synchronize`` around every timed call.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

# dense bf16 peak TFLOP/s per device (no sparsity), for MFU
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "4090": 165.0}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn: Callable[[], Any], device: torch.device, warmup: int, reps: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for key, v in PEAK_BF16_TFLOPS.items() if key in name), None)


def _model(depth: int, dry_run: bool, attention: str = "sdpa") -> Any:
    from varkit.models.var import VAR
    from varkit.models.var_presets import official_shape

    torch.manual_seed(0)
    if dry_run:
        return VAR(num_classes=10, depth=2, width=64, num_heads=2, codebook_size=64, code_dim=8, scales=[1, 2, 3, 4],
                   attention=attention)  # fmt: skip
    return VAR(**{**official_shape(depth), "attention": attention})


# -- 1. training ---------------------------------------------------------------------------------------------------
def training(device: torch.device, dry_run: bool, peak: float | None) -> list[dict[str, Any]]:
    from varkit.models.flops import training_flops_per_sample

    rows = []
    for depth in (16, 30):
        model = _model(depth, dry_run).to(device).train()
        batch = 2 if dry_run else 32
        length = model.scales.total_tokens
        labels = torch.randint(0, model.num_classes, (batch,), device=device)
        inputs = torch.randn(batch, length - model.scales.first_tokens, model.code_dim, device=device)
        targets = torch.randint(0, model.codebook_size, (batch, length), device=device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

        def step(model: Any, optimizer: Any, labels: Any, inputs: Any, targets: Any, dtype: Any) -> None:
            with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
                logits = model(labels, inputs)
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        args = (model, optimizer, labels, inputs, targets, dtype)
        seconds = _median_time(
            lambda args=args: step(*args), device, warmup=1 if dry_run else 3, reps=2 if dry_run else 10
        )
        flops = training_flops_per_sample(model) * batch
        rows.append(
            {
                "model": f"VAR-d{depth}" + (" (dry-run shape)" if dry_run else ""),
                "batch": batch,
                "step_s": seconds,
                "tokens_per_s": batch * length / seconds,
                "tflops": flops / seconds / 1e12,
                "mfu": flops / seconds / 1e12 / peak if peak else None,
            }
        )
        del model, optimizer
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


# -- 2. sampling ---------------------------------------------------------------------------------------------------
def sampling(device: torch.device, dry_run: bool) -> list[dict[str, Any]]:
    import yaml

    from varkit.models.var import sample_images
    from varkit.models.vqvae import vqvae_preset
    from varkit.sampling import SamplingConfig

    model = _model(16, dry_run).to(device).eval()
    vqvae = vqvae_preset("vqvae_tiny" if dry_run else "vqvae_f16").to(device).eval()
    if dry_run:
        # the tiny tokenizer's own vocabulary and scales
        model = _dry_model_for(vqvae).to(device).eval()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model.to(dtype)
    vqvae.decoder_to(dtype)
    batch = 4 if dry_run else 64
    labels = torch.arange(batch, device=device) % model.num_classes
    fast = yaml.safe_load((Path(__file__).resolve().parents[1] / "conf" / "sampling" / "fast.yaml").read_text())
    rows = []
    for name, speedups in (("exact", []), ("fast (stack)", fast["speedups"])):
        spec = SamplingConfig.from_config({"cfg": 1.5, "top_k": 900, "top_p": 0.96, "speedups": speedups})

        def run(spec: Any = spec) -> None:
            with torch.inference_mode():
                sample_images(model, vqvae, labels, sampling=spec, generator=torch.Generator(device).manual_seed(0))

        seconds = _median_time(run, device, warmup=1, reps=2 if dry_run else 3)
        rows.append({"sampler": name, "batch": batch, "batch_s": seconds, "images_per_s": batch / seconds})
    return rows


def _dry_model_for(vqvae: Any) -> Any:
    from varkit.models.var import VAR

    torch.manual_seed(0)
    return VAR(num_classes=10, depth=2, width=64, num_heads=2, codebook_size=vqvae.quantizer.codebook_size,
               code_dim=vqvae.quantizer.code_dim, scales=vqvae.scales.as_list())  # fmt: skip


# -- 3. attention kernels ------------------------------------------------------------------------------------------
def attention(device: torch.device, dry_run: bool) -> list[dict[str, Any]]:
    from varkit.contracts import BlockCausalMask, Scales
    from varkit.registry import ATTENTION_KERNELS

    scales = Scales.of([1, 2, 3, 4] if dry_run else [1, 2, 3, 4, 5, 6, 8, 10, 13, 16])
    heads, head_dim, batch = (2, 16, 2) if dry_run else (16, 64, 32)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    generator = torch.Generator(device).manual_seed(0)
    length = scales.total_tokens
    q, k, v = (torch.randn(batch, heads, length, head_dim, device=device, dtype=dtype, generator=generator)
               for _ in range(3))  # fmt: skip
    last = scales.token_counts[-1]
    mask = BlockCausalMask(scales)
    eager = ATTENTION_KERNELS.build("eager")
    want_full = eager(q, k, v, mask=mask)
    want_cached = eager(q[:, :, -last:], k, v)
    rows = []
    for name in ATTENTION_KERNELS.names():
        kernel = ATTENTION_KERNELS.build(name)
        runs = device.type in kernel.capabilities.devices and getattr(kernel, "available", lambda: True)()
        if not runs or dtype not in kernel.capabilities.dtypes:
            rows.append({"kernel": name, "note": f"not available on {device.type} here"})
            continue
        row: dict[str, Any] = {"kernel": name}
        if kernel.capabilities.mask:
            got = kernel(q, k, v, mask=mask)
            row["teacher_forcing_max_abs_diff"] = float((got.float() - want_full.float()).abs().max())
            row["teacher_forcing_ms"] = 1e3 * _median_time(
                lambda kernel=kernel: kernel(q, k, v, mask=mask), device, warmup=1, reps=3 if dry_run else 20
            )
        got = kernel(q[:, :, -last:], k, v)
        row["sampling_max_abs_diff"] = float((got.float() - want_cached.float()).abs().max())
        row["sampling_ms"] = 1e3 * _median_time(
            lambda kernel=kernel: kernel(q[:, :, -last:], k, v), device, warmup=1, reps=3 if dry_run else 20
        )
        rows.append(row)
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = []
        for key in keys:
            value = row.get(key)
            cells.append("—" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU (what the tests run)")
    parser.add_argument("--device", default=None, help="default: cuda when available (cpu with --dry-run)")
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="peak bf16 TFLOP/s for MFU (default: known GPUs)"
    )
    parser.add_argument("--parts", nargs="+", default=["train", "sample", "attention"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    import varkit  # noqa: F401  (registers the built-ins)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu"))
    if device.type != "cuda" and not args.dry_run:
        parser.error("no CUDA device: run with --dry-run for the CPU smoke test")
    started = time.perf_counter()
    peak = peak_tflops(device, args.peak_tflops)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (dry run)"
    results: dict[str, Any] = {"device": name, "peak_bf16_tflops": peak}
    sections = {"train": training, "sample": sampling, "attention": attention}
    for part in args.parts:
        fn = sections[part]
        results[part] = fn(device, args.dry_run, peak) if part == "train" else fn(device, args.dry_run)
        print(f"\n## {part} ({name})\n\n{_table(results[part])}", flush=True)
    results["seconds"] = time.perf_counter() - started
    print(f"\ntotal {results['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
