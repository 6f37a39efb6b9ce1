"""Conformance kit for attention kernels: does a kernel compute VAR's attention (Sec. 3.2) like the reference?

:func:`check_attention_kernel` runs a kernel against the ``eager`` reference on small random inputs and raises
``AssertionError`` on the first disagreement. It checks, for each dtype the kernel declares on the device:

* forward (and backward, where declared) without a mask and with the block-causal mask;
* KV-cache style calls: queries of the last scale(s) against the whole key prefix, with and without the mask;
* an explicit softmax ``scale``; block causality (later scales never influence earlier outputs);
* dropout behaviour, and that every capability it does *not* declare is refused with a
  :class:`~varkit.contracts.CapabilityError` naming the kernel.

Third-party kernels (plugins) use it in their own tests::

    >>> from varkit import ATTENTION_KERNELS
    >>> report = check_attention_kernel(ATTENTION_KERNELS.build("sdpa"), dtypes=(torch.float32,))
    >>> "forward/float32/mask" in report.passed
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from varkit.attention.eager import EagerAttention
from varkit.contracts import AttentionKernel, BlockCausalMask, CapabilityError, KernelCapabilities, Scales

__all__ = ["AttentionReport", "check_attention_kernel", "default_tolerances"]

#: (atol, rtol) of a kernel against the fp32 eager reference, per input dtype
default_tolerances: dict[torch.dtype, tuple[float, float]] = {
    torch.float32: (2e-5, 1e-4),
    torch.bfloat16: (3e-2, 3e-2),
    torch.float16: (5e-3, 5e-3),
}


@dataclass
class AttentionReport:
    """What :func:`check_attention_kernel` verified (``passed``) and what it skipped and why (``skipped``)."""

    kernel: str
    passed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _caps_on(kernel: Any, device: torch.device) -> KernelCapabilities:
    on = getattr(kernel, "capabilities_on", None)
    return on(device) if callable(on) else kernel.capabilities


def _assert_close(got: Tensor, want: Tensor, dtype: torch.dtype, what: str, tolerances: dict) -> None:
    atol, rtol = tolerances[dtype]
    if got.shape != want.shape:
        raise AssertionError(f"{what}: shape {tuple(got.shape)} != reference {tuple(want.shape)}")
    if got.dtype != dtype:
        raise AssertionError(f"{what}: output dtype {got.dtype} != input dtype {dtype}")
    got32, want32 = got.float(), want.float()
    if not torch.isfinite(got32).all():
        raise AssertionError(f"{what}: non-finite values")
    err = (got32 - want32).abs()
    bound = atol + rtol * want32.abs()
    if (err > bound).any():
        raise AssertionError(f"{what}: max abs error {err.max().item():.3g} exceeds atol={atol}, rtol={rtol}")


def _expect_refusal(kernel: Any, capability: str, call: Any) -> None:
    try:
        call()
    except CapabilityError as err:
        message = str(err)
        if kernel.name not in message or capability not in message:
            raise AssertionError(
                f"kernel {kernel.name!r} refused {capability} but its message does not name both: {message!r}"
            ) from err
        return
    raise AssertionError(f"kernel {kernel.name!r} does not declare {capability} here, yet did not refuse it")


def _inputs(
    shape: tuple[int, int, int, int], dtype: torch.dtype, device: torch.device, generator: torch.Generator
) -> list[Tensor]:
    return [torch.randn(shape, generator=generator).to(device=device, dtype=dtype) for _ in range(3)]


def check_attention_kernel(
    kernel: AttentionKernel,
    *,
    device: torch.device | str = "cpu",
    dtypes: Sequence[torch.dtype] = (torch.float32, torch.bfloat16),
    scales: Scales | None = None,
    batch: int = 2,
    heads: int = 2,
    head_dim: int = 16,
    tolerances: dict[torch.dtype, tuple[float, float]] | None = None,
    seed: int = 0,
) -> AttentionReport:
    """Check ``kernel`` against the eager reference; raises ``AssertionError`` on any mismatch.

    Dtypes the kernel does not declare on ``device`` are checked to be refused, not compared.
    """
    tolerances = {**default_tolerances, **(tolerances or {})}
    device = torch.device(device)
    if not isinstance(kernel, AttentionKernel):
        raise AssertionError(f"{kernel!r} does not implement the AttentionKernel protocol (name, capabilities, call)")
    if not isinstance(kernel.capabilities, KernelCapabilities):
        raise AssertionError(f"{kernel.name!r}.capabilities must be a KernelCapabilities")
    report = AttentionReport(kernel.name)
    if device.type not in kernel.capabilities.devices:
        generator = torch.Generator().manual_seed(seed)
        q, k, v = _inputs((batch, heads, 4, head_dim), torch.float32, device, generator)
        _expect_refusal(kernel, "device", lambda: kernel(q, k, v))
        report.skipped["all"] = f"device {device.type} not declared"
        return report

    scales = scales or Scales.of([1, 2, 3, 4])
    mask = BlockCausalMask(scales)
    total = scales.total_tokens
    last = scales.token_counts[-1]  # the finest scale: the queries of the final KV-cached sampling step
    reference = EagerAttention()
    caps = _caps_on(kernel, device)
    generator = torch.Generator().manual_seed(seed)

    for dtype in dtypes:
        tag = _dtype_name(dtype)
        q, k, v = _inputs((batch, heads, total, head_dim), dtype, device, generator)
        if dtype not in caps.dtypes:
            _expect_refusal(kernel, "dtype", lambda q=q, k=k, v=v: kernel(q, k, v))
            report.skipped[f"dtype/{tag}"] = "not declared"
            continue
        q32, k32, v32 = (t.float() for t in (q, k, v))
        masks: list[BlockCausalMask | None] = [None]
        if caps.mask:
            masks.append(mask)
        else:
            _expect_refusal(kernel, "mask", lambda q=q, k=k, v=v: kernel(q, k, v, mask=mask))
            report.skipped[f"mask/{tag}"] = "not declared"
        for m in masks:
            mtag = f"{tag}/{'mask' if m is not None else 'nomask'}"
            with torch.no_grad():
                want = reference(q32, k32, v32, mask=m)
                _assert_close(kernel(q, k, v, mask=m), want, dtype, f"{kernel.name} forward {mtag}", tolerances)
                report.passed.append(f"forward/{mtag}")
                # KV-cache style: the last scale's queries against every key (what sampling step K does), and a
                # two-scale query chunk, which must still obey the mask inside the chunk.
                for n_q in sorted({last, total - scales.offsets[max(len(scales) - 2, 0)]}):
                    got = kernel(q[:, :, -n_q:], k, v, mask=m)
                    _assert_close(
                        got, want[:, :, -n_q:], dtype, f"{kernel.name} kv-cache {n_q} queries {mtag}", tolerances
                    )
                report.passed.append(f"kvcache/{mtag}")
            if m is not None:
                with torch.no_grad():
                    base = kernel(q, k, v, mask=m)
                    cut = scales.offsets[-2]
                    k2, v2 = k.clone(), v.clone()
                    k2[:, :, cut:] = torch.randn(k2[:, :, cut:].shape, generator=generator).to(k2)
                    v2[:, :, cut:] = torch.randn(v2[:, :, cut:].shape, generator=generator).to(v2)
                    changed = kernel(q, k2, v2, mask=m)
                if not torch.equal(base[:, :, :cut], changed[:, :, :cut]):
                    raise AssertionError(f"{kernel.name}: the last scale's keys changed earlier scales' outputs")
                report.passed.append(f"causality/{tag}")

            # backward
            if caps.backward:
                leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
                leaves32 = [t.detach().float().requires_grad_(True) for t in (q, k, v)]
                upstream = torch.randn(want.shape, generator=generator).to(device)
                kernel(*leaves, mask=m).float().backward(upstream)
                reference(*leaves32, mask=m).backward(upstream)
                for name, got_leaf, want_leaf in zip("qkv", leaves, leaves32, strict=True):
                    if got_leaf.grad is None or want_leaf.grad is None:
                        raise AssertionError(f"{kernel.name}: no gradient reached {name} ({mtag})")
                    _assert_close(
                        got_leaf.grad,
                        want_leaf.grad,
                        dtype,
                        f"{kernel.name} grad {name} {mtag}",
                        {**tolerances, torch.float32: (1e-4, 1e-3)},
                    )
                report.passed.append(f"backward/{mtag}")
            else:
                leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
                _expect_refusal(kernel, "backward", lambda leaves=leaves, m=m: kernel(*leaves, mask=m))
                report.skipped[f"backward/{mtag}"] = "not declared"

        with torch.no_grad():
            _assert_close(
                kernel(q, k, v, scale=0.3),
                reference(q32, k32, v32, scale=0.3),
                dtype,
                f"{kernel.name} explicit scale {tag}",
                tolerances,
            )
        report.passed.append(f"scale/{tag}")

        # dropout: with p > 0 the output must differ from p = 0 and stay finite; undeclared => refused
        with torch.no_grad():
            if caps.dropout:
                plain = kernel(q, k, v, mask=masks[-1])
                dropped = kernel(q, k, v, mask=masks[-1], dropout_p=0.5)
                if not torch.isfinite(dropped.float()).all() or torch.equal(plain, dropped):
                    raise AssertionError(f"{kernel.name}: dropout_p=0.5 had no effect or gave non-finite values")
                report.passed.append(f"dropout/{tag}")
            else:
                _expect_refusal(kernel, "dropout", lambda q=q, k=k, v=v: kernel(q, k, v, dropout_p=0.5))
                report.skipped[f"dropout/{tag}"] = "not declared"
    return report
