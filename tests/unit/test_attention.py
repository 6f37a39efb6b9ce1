"""Attention kernels: masks and their cache, per-scale decomposition, capability errors, auto's choices, flash
plumbing (with a stand-in module on CPU), and the conformance kit's ability to catch broken kernels."""

from __future__ import annotations

import logging
import sys
import types

import pytest
import torch
import torch.nn.functional as F

import varkit
from varkit import ATTENTION_KERNELS, BlockCausalMask, Scales
from varkit.attention import (
    AutoAttention,
    EagerAttention,
    FlashAttention,
    FlashAttentionUnavailable,
    KernelBase,
    SDPAAttention,
    additive_mask,
    block_causal_block_mask,
    dense_mask,
    flash_attn_available,
    per_scale_attention,
)
from varkit.attention.base import query_spans
from varkit.contracts import CapabilityError, KernelCapabilities
from varkit.registry import UnknownComponentError
from varkit.testing import check_attention_kernel

SCALES = Scales.of([1, 2, 3, 4])  # 30 tokens
VAR_256 = Scales.of([1, 2, 3, 4, 5, 6, 8, 10, 13, 16])


def _qkv(length: int, *, len_q: int | None = None, dim: int = 16, seed: int = 0, grad: bool = False):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 3, len_q or length, dim, generator=g)
    k, v = (torch.randn(2, 3, length, dim, generator=g) for _ in range(2))
    return [t.requires_grad_(grad) for t in (q, k, v)]


# -- masks --------------------------------------------------------------------------------------------------------
def test_dense_mask_matches_contract_and_is_cached() -> None:
    mask = BlockCausalMask(SCALES)
    full = dense_mask(mask, 30, 30, "cpu")
    assert torch.equal(full, mask.dense())
    assert dense_mask(mask, 30, 30, torch.device("cpu")) is full  # cached: no rebuild per layer/step
    assert dense_mask(BlockCausalMask(Scales.of([1, 2, 3, 4])), 30, 30, "cpu") is full  # equal scales share it
    # a query chunk (the last 16 positions = scale 4) sees everything; the last 25 include scale 3's rows
    assert torch.equal(dense_mask(mask, 16, 30, "cpu"), full[-16:])
    assert dense_mask(mask, 16, 30, "cpu").all()
    assert torch.equal(dense_mask(mask, 25, 30, "cpu"), full[-25:])
    # keys may be a prefix of the schedule (KV cache after scale 3)
    assert torch.equal(dense_mask(mask, 9, 14, "cpu"), full[5:14, :14])


def test_additive_mask_per_dtype() -> None:
    mask = BlockCausalMask(SCALES)
    bias32 = additive_mask(mask, 30, 30, "cpu", torch.float32)
    bias16 = additive_mask(mask, 30, 30, "cpu", torch.bfloat16)
    assert bias32.dtype == torch.float32 and bias16.dtype == torch.bfloat16
    assert torch.equal(bias32, mask.additive()[0, 0])
    assert additive_mask(mask, 30, 30, "cpu", torch.float32) is bias32


def test_mask_lengths_are_validated() -> None:
    mask = BlockCausalMask(SCALES)
    with pytest.raises(ValueError, match="len_k <= 30"):
        dense_mask(mask, 30, 31, "cpu")
    with pytest.raises(ValueError, match="suffix"):
        ATTENTION_KERNELS.build("sdpa")(*_qkv(10, len_q=12))


def test_mask_built_in_inference_mode_serves_training() -> None:
    """The cache must not hand an inference tensor to autograd (sampling first, then a training step)."""
    scales = Scales.of([1, 3, 5])
    kernel = SDPAAttention()
    with torch.inference_mode():
        kernel(*_qkv(35), mask=BlockCausalMask(scales))
    q, k, v = _qkv(35, grad=True)
    kernel(q, k, v, mask=BlockCausalMask(scales)).sum().backward()
    assert q.grad is not None


def test_query_spans() -> None:
    assert query_spans(SCALES, 30, 30) == [(0, 1, 1), (1, 5, 5), (5, 14, 14), (14, 30, 30)]
    assert query_spans(SCALES, 20, 30) == [(0, 4, 14), (4, 20, 30)]  # chunk starts inside scale 3
    assert query_spans(SCALES, 9, 14) == [(0, 9, 14)]


@pytest.mark.parametrize("len_q", [680, 425, 256])
def test_per_scale_attention_equals_dense_mask(len_q: int) -> None:
    q, k, v = _qkv(680, len_q=len_q, dim=8)
    mask = BlockCausalMask(VAR_256)
    reference = EagerAttention()(q, k, v, mask=mask)
    decomposed = per_scale_attention(F.scaled_dot_product_attention, q, k, v, VAR_256)
    torch.testing.assert_close(decomposed, reference, atol=2e-6, rtol=1e-5)


def test_flex_block_mask_is_cached_and_sparse_where_expected() -> None:
    mask = BlockCausalMask(VAR_256)
    block_mask = block_causal_block_mask(mask, 680, 680, "cpu")
    assert block_causal_block_mask(mask, 680, 680, "cpu") is block_mask
    assert block_mask.shape[-2:] == (680, 680)
    assert 0.0 < block_mask.sparsity() < 5.0  # VAR's mask is dense: ~1% of the 128x128 tiles are empty


# -- eager reference ----------------------------------------------------------------------------------------------
def test_eager_matches_a_handwritten_softmax() -> None:
    q, k, v = _qkv(30)
    mask = BlockCausalMask(SCALES)
    allowed = mask.dense()
    scores = (q @ k.transpose(-1, -2)) / 4.0  # head_dim 16
    expected = scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v
    torch.testing.assert_close(EagerAttention()(q, k, v, mask=mask), expected)
    # the first token attends only to itself
    torch.testing.assert_close(EagerAttention()(q, k, v, mask=mask)[:, :, 0], v[:, :, 0])


def test_dropout_is_unbiased_in_expectation() -> None:
    q, k, v = _qkv(30)
    torch.manual_seed(0)
    # 400 independent dropout draws in one call: repeat the batch
    copies = [t.repeat(400, 1, 1, 1) for t in (q, k, v)]
    runs = EagerAttention()(*copies, dropout_p=0.5).view(400, *q.shape).mean(0)
    torch.testing.assert_close(runs, EagerAttention()(q, k, v), atol=0.15, rtol=0.0)
    assert not torch.equal(EagerAttention()(q, k, v, dropout_p=0.5), EagerAttention()(q, k, v))


# -- sdpa ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", [None, "math", "flash"])
@pytest.mark.parametrize("mask_strategy", ["dense", "per_scale"])
def test_sdpa_variants_conform(backend: str | None, mask_strategy: str) -> None:
    kernel = ATTENTION_KERNELS.build({"name": "sdpa", "backend": backend, "mask_strategy": mask_strategy})
    report = check_attention_kernel(kernel, dtypes=(torch.float32,))
    assert "forward/float32/mask" in report.passed and "backward/float32/mask" in report.passed


def test_sdpa_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="backend"):
        SDPAAttention(backend="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mask_strategy"):
        SDPAAttention(mask_strategy="sparse")  # type: ignore[arg-type]


# -- capability errors --------------------------------------------------------------------------------------------
def test_capability_errors_name_kernel_and_capability() -> None:
    q, k, v = _qkv(30, grad=True)
    with pytest.raises(CapabilityError, match=r"'flex' does not support backward on cpu"):
        ATTENTION_KERNELS.build("flex")(q, k, v)
    with pytest.raises(CapabilityError, match=r"'flex' does not support dropout"):
        ATTENTION_KERNELS.build("flex")(*_qkv(30), dropout_p=0.1)
    with pytest.raises(CapabilityError, match=r"'flash' does not support device 'cpu'"):
        ATTENTION_KERNELS.build("flash")(q, k, v)
    with pytest.raises(CapabilityError, match=r"'sdpa' does not support device 'cpu'"):
        ATTENTION_KERNELS.build({"name": "sdpa", "backend": "efficient"})(q, k, v)
    with pytest.raises(CapabilityError, match=r"'sdpa' does not support dropout"):
        ATTENTION_KERNELS.build({"name": "sdpa", "backend": "flash"})(q, k, v, dropout_p=0.1)


def test_flex_runs_without_grad_on_cpu() -> None:
    q, k, v = _qkv(30, grad=True)
    with torch.no_grad():
        out = ATTENTION_KERNELS.build("flex")(q, k, v, mask=BlockCausalMask(SCALES))
    torch.testing.assert_close(out, EagerAttention()(q, k, v, mask=BlockCausalMask(SCALES)), atol=1e-6, rtol=1e-5)


class _NarrowKernel(KernelBase):
    """A fp16-only, mask-free kernel to exercise the shared checks."""

    name = "narrow"
    capabilities = KernelCapabilities(mask=False, backward=False, dropout=False, dtypes=(torch.float16,))

    def __call__(self, q, k, v, *, mask=None, dropout_p=0.0, scale=None):
        self.check(q, k, v, mask=mask, dropout_p=dropout_p)
        return F.scaled_dot_product_attention(q, k, v, scale=scale)


def test_shared_checks_messages() -> None:
    kernel = _NarrowKernel()
    with pytest.raises(CapabilityError, match=r"'narrow' does not support dtype float32 on cpu \(supports: float16\)"):
        kernel(*_qkv(30))
    half = [t.half() for t in _qkv(30)]
    with pytest.raises(CapabilityError, match=r"'narrow' does not support a block-causal mask"):
        kernel(*half, mask=BlockCausalMask(SCALES))
    with pytest.raises(ValueError, match="batch, heads, length, head_dim"):
        kernel(half[0][0], half[1][0], half[2][0])


def test_unknown_kernel_is_a_registry_error() -> None:
    with pytest.raises(UnknownComponentError, match="Did you mean 'flash'"):
        ATTENTION_KERNELS.build({"name": "flsh"})
    with pytest.raises(TypeError, match="accepts: backend, mask_strategy"):
        ATTENTION_KERNELS.build({"name": "sdpa", "backnd": "math"})


# -- flash (package missing here; plumbing checked with a stand-in module) ----------------------------------------
@pytest.mark.skipif(flash_attn_available(), reason="flash-attn is installed here")
def test_flash_missing_package_error_has_install_hint() -> None:
    kernel = FlashAttention()
    assert not kernel.available()
    with pytest.raises(FlashAttentionUnavailable, match=r"pip install varkit\[flash\].*pip install flash-attn"):
        kernel._flash()


def test_flash_layout_and_per_scale_training_with_a_stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake ``flash_attn`` that checks flash's (b, len, heads, dim) layout and refuses masks: the kernel must
    convert layouts and realise the block-causal mask as per-scale prefix calls."""
    calls: list[tuple[int, int]] = []

    def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False):
        assert q.shape[2] == 3 and k.shape[2] == 3, "heads must be dim 2 in flash layout"
        assert causal is False and dropout_p == 0.0
        calls.append((q.shape[1], k.shape[1]))
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=softmax_scale
        )
        return out.transpose(1, 2)

    monkeypatch.setitem(sys.modules, "flash_attn", types.SimpleNamespace(flash_attn_func=flash_attn_func))
    kernel = FlashAttention()
    kernel.capabilities = KernelCapabilities(devices=("cpu",))  # let the plumbing run on CPU
    q, k, v = _qkv(30, grad=True)
    mask = BlockCausalMask(SCALES)
    out = kernel(q, k, v, mask=mask)
    assert calls == [(1, 1), (4, 5), (9, 14), (16, 30)]
    reference = EagerAttention()(q, k, v, mask=mask)
    torch.testing.assert_close(out, reference, atol=1e-6, rtol=1e-5)
    out.sum().backward()
    assert q.grad is not None and k.grad is not None
    calls.clear()
    cached = kernel(q[:, :, 14:], k, v)  # KV-cached sampling: one mask-free call
    assert calls == [(16, 30)]
    torch.testing.assert_close(cached, reference[:, :, 14:], atol=1e-6, rtol=1e-5)


def test_flash_declares_cuda_half_only() -> None:
    caps = FlashAttention().capabilities
    assert caps.devices == ("cuda",) and set(caps.dtypes) == {torch.float16, torch.bfloat16}
    assert FlashAttention(version=3).capabilities.dropout is False
    with pytest.raises(ValueError, match="2 or 3"):
        FlashAttention(version=1)  # type: ignore[arg-type]


# -- auto ---------------------------------------------------------------------------------------------------------
def test_auto_chooses_per_situation_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    auto = AutoAttention(candidates=["flash", "flex", "sdpa"])
    mask = BlockCausalMask(SCALES)
    with caplog.at_level(logging.INFO, logger="varkit.attention.auto"):
        q, k, v = _qkv(30, grad=True)
        out = auto(q, k, v, mask=mask)  # training: flex has no CPU backward, flash no CPU -> sdpa
        auto(q, k, v, mask=mask)
        with torch.no_grad():
            auto(q, k, v, mask=mask)  # no grad -> flex can serve it
    choices = [r.getMessage() for r in caplog.records]
    assert len(choices) == 2, choices
    assert "SDPAAttention" in choices[0] and "needing mask, backward" in choices[0]
    assert "FlexAttention" in choices[1]
    torch.testing.assert_close(out, EagerAttention()(q, k, v, mask=mask), atol=1e-6, rtol=1e-5)


def test_auto_never_degrades_a_capability() -> None:
    auto = ATTENTION_KERNELS.build({"name": "auto", "candidates": ["flex"]})
    q, k, v = _qkv(30, grad=True)
    with pytest.raises(CapabilityError, match=r"'auto' has no candidate .*flex: no backward on cpu"):
        auto(q, k, v)
    auto = ATTENTION_KERNELS.build({"name": "auto", "candidates": ["flash", {"name": "sdpa", "backend": "math"}]})
    with pytest.raises(ValueError, match="auto"):
        AutoAttention(candidates=["auto"])
    assert auto.capabilities_on("cpu").dtypes  # sdpa serves CPU; flash contributes nothing there
    report = check_attention_kernel(auto, dtypes=(torch.float32,))
    assert "backward/float32/mask" in report.passed


# -- the conformance kit catches broken kernels --------------------------------------------------------------------
class _MaskIgnoringKernel(KernelBase):
    name = "ignores-mask"
    capabilities = KernelCapabilities()

    def __call__(self, q, k, v, *, mask=None, dropout_p=0.0, scale=None):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale)


class _SilentNoBackwardKernel(_MaskIgnoringKernel):
    name = "silent"
    capabilities = KernelCapabilities(backward=False)

    def __call__(self, q, k, v, *, mask=None, dropout_p=0.0, scale=None):
        allowed = None if mask is None else mask.dense(q.device)[-q.shape[-2] :, : k.shape[-2]]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p, scale=scale)


class _WrongScaleKernel(_SilentNoBackwardKernel):
    name = "wrong-scale"
    capabilities = KernelCapabilities()

    def __call__(self, q, k, v, *, mask=None, dropout_p=0.0, scale=None):
        return super().__call__(q, k, v, mask=mask, dropout_p=dropout_p, scale=None)


@pytest.mark.parametrize(
    ("kernel", "message"),
    [
        (_MaskIgnoringKernel(), "forward float32/mask"),
        (_SilentNoBackwardKernel(), "did not refuse"),
        (_WrongScaleKernel(), "explicit scale"),
    ],
)
def test_conformance_kit_catches_broken_kernels(kernel: KernelBase, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_attention_kernel(kernel, dtypes=(torch.float32,))


# -- compiled / GPU ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_flex_compiled_on_cpu_matches_eager() -> None:
    kernel = ATTENTION_KERNELS.build({"name": "flex", "compile": True})
    q, k, v = _qkv(30)
    mask = BlockCausalMask(SCALES)
    torch.testing.assert_close(kernel(q, k, v, mask=mask), EagerAttention()(q, k, v, mask=mask), atol=2e-6, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(
    "spec",
    [
        "sdpa",
        "flex",
        "auto",
        {"name": "sdpa", "backend": "flash", "mask_strategy": "per_scale"},
        {"name": "sdpa", "backend": "efficient"},
        {"name": "sdpa", "backend": "cudnn", "mask_strategy": "per_scale"},
        "flash",
    ],
    ids=str,
)
def test_kernels_on_cuda(spec: str | dict) -> None:
    kernel = ATTENTION_KERNELS.build(spec)
    if not kernel.available():
        pytest.skip(f"{spec} is not installed (pip install varkit[flash])")
    report = check_attention_kernel(
        kernel, device="cuda", dtypes=(torch.float32, torch.bfloat16, torch.float16), scales=VAR_256, head_dim=64
    )
    assert any(p.startswith("forward/bfloat16") for p in report.passed), report


def test_every_attention_config_builds() -> None:
    """conf/attention/*.yaml: keys are constructor arguments, one file per registered kernel."""
    from pathlib import Path

    from omegaconf import OmegaConf

    conf_dir = Path(varkit.__file__).parent / "conf" / "attention"
    files = sorted(conf_dir.glob("*.yaml"))
    assert {f.stem for f in files} >= {"eager", "sdpa", "flex", "flash", "auto"}
    for file in files:
        cfg = OmegaConf.load(file)
        kernel = ATTENTION_KERNELS.build(OmegaConf.to_container(cfg, resolve=True))
        assert kernel.name == cfg.name == file.stem
