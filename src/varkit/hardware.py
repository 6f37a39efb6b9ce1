"""What the machine can do fast, so that ``precision: auto`` picks bf16 only where bf16 is actually faster.

bf16 matmuls are ~6x faster than fp32 on CPUs with AMX (Sapphire Rapids and later) but ~5x *slower* on AVX-512
CPUs without bf16 instructions, where PyTorch emulates them. GPUs with compute capability >= 8.0 run bf16 natively.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

__all__ = ["cpu_bf16_flags", "fast_bf16", "resolve_device", "resolve_precision", "trainer_precision"]

_FAST_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def resolve_device(spec: str | torch.device) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; anything else as :class:`torch.device` (``"cuda:1"``, ...)."""
    if isinstance(spec, str) and spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


@functools.cache
def cpu_bf16_flags() -> tuple[str, ...]:
    """The bf16-related instruction-set flags this CPU reports (empty where unknown)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return tuple(f for f in _FAST_CPU_FLAGS if f in flags)


def fast_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether bf16 compute is faster than fp32 on ``device``."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(cpu_bf16_flags())
    return False


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> torch.dtype:
    """``auto`` | ``bf16`` | ``fp16`` | ``fp32`` -> the dtype to compute in on ``device``."""
    choice = precision.lower()
    if choice == "auto":
        return torch.bfloat16 if fast_bf16(device) else torch.float32
    table = {
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
        "fp32": torch.float32,
        "float32": torch.float32,
    }
    if choice not in table:
        raise ValueError(f"unknown precision {precision!r}; use auto, bf16, fp16 or fp32")
    return table[choice]


def trainer_precision(accelerator: str = "auto") -> str:
    """Lightning ``precision`` for ``auto``: ``bf16-mixed`` where bf16 is fast, else ``32-true``."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "bf16-mixed" if fast_bf16("cuda") else "32-true"
    return "bf16-mixed" if fast_bf16("cpu") else "32-true"
