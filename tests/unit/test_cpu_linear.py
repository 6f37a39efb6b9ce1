"""varkit.nn.cpu_linear: oneDNN inference linears equal F.linear, fall back where needed, never serve stale weights."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from varkit.nn import cpu_linear
from varkit.nn.cpu_linear import InferenceLinear, cpu_linear_backend, set_cpu_linear_backend

pytestmark = pytest.mark.skipif(not cpu_linear.onednn_linear_available(), reason="this torch build has no oneDNN")


@pytest.fixture(autouse=True)
def _restore_backend() -> Iterator[None]:
    before, limit = cpu_linear._backend, cpu_linear._CACHE.limit
    yield
    cpu_linear._backend = before
    cpu_linear._CACHE.limit = limit
    cpu_linear.clear_packed_cache()


def _layer(seed: int = 0, n_in: int = 64, n_out: int = 96) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(n_in, n_out)


@pytest.mark.parametrize("backend", ["onednn", "onednn_packed"])
@pytest.mark.parametrize("activation", ["none", "gelu_tanh"])
def test_onednn_linear_equals_f_linear(backend: str, activation: str) -> None:
    set_cpu_linear_backend(backend)
    layer = _layer()
    x = torch.randn(3, 7, 64)
    expected = F.linear(x, layer.weight, layer.bias)
    if activation == "gelu_tanh":
        expected = F.gelu(expected, approximate="tanh")
    with torch.inference_mode():
        got = InferenceLinear(layer.weight, layer.bias, activation=activation)(x)
    assert got.shape == (3, 7, 96) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_bf16_under_autocast_matches_f_linear() -> None:
    set_cpu_linear_backend("onednn")
    layer = _layer()
    x = torch.randn(5, 64)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = F.linear(x, layer.weight, layer.bias)
        got = InferenceLinear(layer.weight, layer.bias)(x)
    assert got.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected.float(), rtol=2e-2, atol=2e-2)


def test_packed_cache_follows_in_place_weight_updates() -> None:
    set_cpu_linear_backend("onednn_packed")
    layer = _layer()
    x = torch.randn(4, 64)
    linear = InferenceLinear(layer.weight, layer.bias)
    with torch.inference_mode():
        first = linear(x)
    assert cpu_linear.packed_cache_bytes() == 64 * 96 * 4
    with torch.no_grad():
        layer.weight.mul_(2.0)  # what an optimizer step or load_state_dict does: same tensor, new version
    with torch.inference_mode():
        second = linear(x)
    torch.testing.assert_close(second, F.linear(x, layer.weight, layer.bias).detach(), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(first, second)
    assert cpu_linear.packed_cache_bytes() == 64 * 96 * 4  # replaced, not added


def test_packed_cache_forgets_dead_weights() -> None:
    set_cpu_linear_backend("onednn_packed")
    layer = _layer()
    with torch.inference_mode():
        InferenceLinear(layer.weight, layer.bias)(torch.randn(2, 64))
    assert cpu_linear.packed_cache_bytes() > 0
    del layer
    import gc

    gc.collect()
    assert cpu_linear.packed_cache_bytes() == 0


def test_full_packed_cache_runs_the_rest_unpacked_and_evicts_nothing() -> None:
    """A model larger than the cache keeps its first weights packed; the others run on their plain weights."""
    set_cpu_linear_backend("onednn_packed")
    layers = [_layer(seed) for seed in range(3)]
    one = 64 * 96 * 4
    cpu_linear.set_packed_cache_limit(2.5 * one / 2**20)
    x = torch.randn(4, 64)
    with torch.inference_mode():
        for _ in range(2):  # a second pass (the next scale) must neither evict nor re-pack
            for layer in layers:
                got = InferenceLinear(layer.weight, layer.bias)(x)
                torch.testing.assert_close(got, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)
            assert cpu_linear.packed_cache_bytes() == 2 * one
            cached = [entry[0]() for entry in cpu_linear._CACHE.entries.values()]
            assert cached[0] is layers[0].weight and cached[1] is layers[1].weight and len(cached) == 2
    cpu_linear.set_packed_cache_limit(1.5 * one / 2**20)  # lowering the bound drops the latest entries
    assert cpu_linear.packed_cache_bytes() == one
    with pytest.raises(ValueError, match=">= 0"):
        cpu_linear.set_packed_cache_limit(-1)


def test_autograd_uses_f_linear_and_gets_gradients() -> None:
    set_cpu_linear_backend("onednn")
    layer = _layer()
    x = torch.randn(2, 64, requires_grad=True)
    InferenceLinear(layer.weight, layer.bias)(x).sum().backward()
    assert x.grad is not None and layer.weight.grad is not None


def test_backend_names_are_checked() -> None:
    with pytest.raises(ValueError, match="onednn_packed"):
        set_cpu_linear_backend("mkl")
    set_cpu_linear_backend("auto")
    assert cpu_linear_backend() == "onednn_packed"
    set_cpu_linear_backend("aten")
    assert cpu_linear_backend() == "aten"


def test_sampler_tokens_identical_across_backends_on_a_tiny_model() -> None:
    """The exact sampler with oneDNN GEMMs draws the same tokens as with F.linear (fp32, fixed generator)."""
    from varkit.testing.speedup import _quantizer, tiny_var

    model, quantizer = tiny_var(0), _quantizer("msvq")
    tokens = {}
    for backend in ("aten", "onednn", "onednn_packed"):
        set_cpu_linear_backend(backend)
        with torch.inference_mode():
            out = model.generate(torch.tensor([1, 2]), quantizer, generator=torch.Generator().manual_seed(0), cfg=1.5)
        tokens[backend] = out.tokens
    for backend in ("onednn", "onednn_packed"):
        for a, b in zip(tokens["aten"], tokens[backend]):
            assert torch.equal(a, b)
