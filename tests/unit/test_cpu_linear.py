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


# -- training linears (Linear / linear with VARKIT_TRAIN_LINEAR) -----------------------------------------------------
@pytest.fixture
def _restore_train_backend() -> Iterator[None]:
    before = cpu_linear._train_backend
    yield
    cpu_linear._train_backend = before


@pytest.mark.usefixtures("_restore_train_backend")
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("transposed_input", [False, True])
def test_training_linear_matches_f_linear_values_and_gradients(bias: bool, transposed_input: bool) -> None:
    from varkit.nn.cpu_linear import Linear, set_train_linear_backend, train_linear_backend

    torch.manual_seed(0)
    layer = Linear(48, 80, bias=bias)
    x = torch.randn(3, 48, 7).transpose(1, 2) if transposed_input else torch.randn(3, 7, 48)  # non-contiguous too
    x.requires_grad_(True)
    upstream = torch.randn(3, 7, 80)
    grads = {}
    for backend in ("aten", "onednn"):
        set_train_linear_backend(backend)
        assert train_linear_backend() == backend
        layer.zero_grad(set_to_none=True)
        x.grad = None
        out = layer(x)
        (out * upstream).sum().backward()
        grads[backend] = (out.detach(), x.grad, layer.weight.grad, None if layer.bias is None else layer.bias.grad)
    for a, b in zip(grads["aten"], grads["onednn"]):
        if a is None:
            assert b is None
        else:
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    assert isinstance(layer, torch.nn.Linear)
    assert set(layer.state_dict()) == ({"weight", "bias"} if bias else {"weight"})


@pytest.mark.usefixtures("_restore_train_backend")
def test_training_linear_uses_onednn_only_where_it_should(monkeypatch: pytest.MonkeyPatch) -> None:
    from varkit.nn.cpu_linear import Linear, _OneDNNLinear, set_train_linear_backend

    calls = []
    real_apply = _OneDNNLinear.apply
    monkeypatch.setattr(_OneDNNLinear, "apply", lambda *a: calls.append(1) or real_apply(*a))
    set_train_linear_backend("onednn")
    layer = Linear(16, 8)
    x = torch.randn(4, 16, requires_grad=True)
    layer(x).sum().backward()
    assert len(calls) == 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(x).dtype == torch.bfloat16  # autocast: F.linear
    layer.double()(x.double())  # float64: F.linear
    set_train_linear_backend("aten")
    Linear(16, 8)(x)
    assert len(calls) == 1
    with pytest.raises(ValueError, match="onednn"):
        set_train_linear_backend("mkl")


@pytest.mark.usefixtures("_restore_train_backend")
def test_auto_training_backend_is_probed_once() -> None:
    from varkit.nn.cpu_linear import set_train_linear_backend, train_linear_backend

    set_train_linear_backend("auto")
    assert cpu_linear._train_backend is None
    chosen = train_linear_backend()
    assert chosen in ("onednn", "aten") and cpu_linear._train_backend == chosen


@pytest.mark.usefixtures("_restore_train_backend")
def test_var_training_step_gradients_agree_across_training_backends() -> None:
    """A whole teacher-forced VAR loss: the oneDNN training linears give the F.linear gradients (fp32)."""
    from varkit.nn.cpu_linear import set_train_linear_backend
    from varkit.testing.speedup import tiny_var

    model = tiny_var(0).train()
    total, first = model.scales.total_tokens, model.scales.first_tokens
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(0, int(model.num_classes), (3,), generator=generator)
    inputs = torch.randn(3, total - first, model.word_embedding.in_features, generator=generator)
    targets = torch.randint(0, model.head.out_features, (3, total), generator=generator)
    grads = {}
    for backend in ("aten", "onednn"):
        set_train_linear_backend(backend)
        model.zero_grad(set_to_none=True)
        logits = model(labels, inputs, generator=torch.Generator().manual_seed(2))
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)).backward()
        grads[backend] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads["aten"].keys() == grads["onednn"].keys() and len(grads["aten"]) > 10
    for name, grad in grads["aten"].items():
        torch.testing.assert_close(grads["onednn"][name], grad, rtol=1e-4, atol=1e-5, msg=name)
