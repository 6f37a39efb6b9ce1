"""Conformance check for sampling speed-ups (:data:`varkit.registry.SAMPLERS`, built-in or from a plugin).

``check_speedup(name, settings)`` samples with a tiny random VAR and checks what every speed-up owes the user:

* **off** (the speed-up's ``OFF`` settings, or ``off=``): tokens and latent bit-identical to the exact sampler,
  with guidance on and off, under random top-k sampling;
* **on**: the latent's shape and dtype kept, tokens ``(b, h_k w_k)`` int64 within the vocabulary for every scale
  sampled; the same tokens twice under the same generator; batch independence (greedy tokens of a batch equal
  those of each sample alone) when the speed-up declares ``batch_independent``; guidance on and off; an editing
  constraint honoured (kept positions hold the source tokens); every registered quantizer and every attention
  kernel that runs on the device.

It raises ``AssertionError`` naming the failed property; the report lists what passed and what was skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from varkit.models.generation import EditConstraint
from varkit.registry import ATTENTION_KERNELS, QUANTIZERS, SAMPLERS

__all__ = ["SpeedupReport", "check_speedup", "tiny_var"]

Settings = Mapping[str, Any] | Callable[[Any], Mapping[str, Any]]


@dataclass
class SpeedupReport:
    """What :func:`check_speedup` verified (``passed``) and could not run here (``skipped``: reason)."""

    name: str
    passed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def tiny_var(seed: int = 0, *, depth: int = 3, attention: str = "sdpa", code_dim: int = 8) -> Any:
    """A tiny random VAR (scales 1, 2, 3, 4; 64 codes; 10 classes) whose weights are large enough that every
    path changes the output (the reference initialisation starts near the identity)."""
    from varkit.models.var import VAR

    torch.manual_seed(seed)
    model = VAR(
        num_classes=10,
        depth=depth,
        width=64,
        num_heads=2,
        class_dropout=0.0,
        codebook_size=64,
        code_dim=code_dim,
        scales=[1, 2, 3, 4],
        attention=attention,
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return model.eval()


def _quantizer(name: str, code_dim: int = 8) -> Any:
    spec: dict[str, Any] = {"name": name, "code_dim": code_dim}
    import inspect

    parameters = inspect.signature(QUANTIZERS.get(name)).parameters
    if "codebook_size" in parameters:
        spec["codebook_size"] = 64
    if "levels" in parameters:
        spec["levels"] = [4, 4, 4]  # 64 codes
    torch.manual_seed(0)
    quantizer: Any = QUANTIZERS.build(spec)
    quantizer.eval()
    codebook = getattr(quantizer, "codebook", None)
    if codebook is not None and hasattr(codebook, "weight"):
        with torch.no_grad():
            codebook.weight.normal_()
    return quantizer


def _settings(settings: Settings, model: Any) -> dict[str, Any]:
    return dict(settings(model) if callable(settings) else settings)


def _run(model: Any, quantizer: Any, labels: torch.Tensor, speedups: list[Any], seed: int = 0, **options: Any) -> Any:
    generator = torch.Generator().manual_seed(seed)
    return model.generate(labels, quantizer, generator=generator, speedups=speedups, **options)


def _same(a: Any, b: Any) -> bool:
    return len(a.tokens) == len(b.tokens) and all(torch.equal(x, y) for x, y in zip(a.tokens, b.tokens))


def check_speedup(
    name: str,
    settings: Settings = (),  # type: ignore[assignment]
    *,
    off: Mapping[str, Any] | None = None,
    quantizers: list[str] | None = None,
    kernels: list[str] | None = None,
    device: str = "cpu",
) -> SpeedupReport:
    """Check the speed-up registered as ``name`` built with ``settings`` (a mapping, or a function of the tiny
    model returning one, e.g. to pass a refiner model). ``off``: settings that switch it off (default: the
    factory's ``OFF`` attribute). ``quantizers``/``kernels``: which to cover (default: every registered one)."""
    import varkit.sampling  # noqa: F401  (registers the built-in speed-ups)

    report = SpeedupReport(name)
    factory = SAMPLERS.get(name)
    off = dict(off if off is not None else getattr(factory, "OFF", {}))
    model = tiny_var(0).to(device)
    quantizer = _quantizer("msvq").to(device)
    labels = torch.tensor([1, 4, 7], device=device)

    def build(model: Any, extra: Mapping[str, Any] | None = None) -> Any:
        return SAMPLERS.build({"name": name, **_settings(settings, model), **(extra or {})})

    # -- off: the exact sampler, bit for bit ----------------------------------------------------------------------
    for cfg in (0.0, 1.5):
        options: dict[str, Any] = {"cfg": cfg, "top_k": 16}
        exact = _run(model, quantizer, labels, [], **options)
        switched_off = _run(model, quantizer, labels, [build(model, off)], **options)
        if not _same(exact, switched_off) or not torch.equal(exact.latent, switched_off.latent):
            raise AssertionError(f"speed-up {name!r} switched off ({off}) changed the tokens (cfg={cfg})")
    report.passed.append("off/bit-identical")

    # -- on: shapes, dtypes, determinism, guidance on/off ---------------------------------------------------------
    speedup = build(model)
    for cfg in (0.0, 1.5):
        options = {"cfg": cfg, "top_k": 16}
        exact = _run(model, quantizer, labels, [], **options)
        first = _run(model, quantizer, labels, [speedup], **options)
        again = _run(model, quantizer, labels, [speedup], **options)
        if first.latent.shape != exact.latent.shape or first.latent.dtype != exact.latent.dtype:
            raise AssertionError(
                f"speed-up {name!r}: latent {tuple(first.latent.shape)} {first.latent.dtype}, expected "
                f"{tuple(exact.latent.shape)} {exact.latent.dtype}"
            )
        if not 1 <= len(first.tokens) <= len(exact.tokens):
            raise AssertionError(f"speed-up {name!r} returned {len(first.tokens)} token maps")
        for k, tokens in enumerate(first.tokens):
            if tokens.shape != exact.tokens[k].shape or tokens.dtype != torch.int64:
                raise AssertionError(f"speed-up {name!r}: tokens of scale {k} are {tuple(tokens.shape)} {tokens.dtype}")
            if int(tokens.min()) < 0 or int(tokens.max()) >= model.codebook_size:
                raise AssertionError(f"speed-up {name!r}: tokens of scale {k} leave the vocabulary")
        if not _same(first, again) or not torch.equal(first.latent, again.latent):
            raise AssertionError(f"speed-up {name!r} is not deterministic under a fixed generator (cfg={cfg})")
    report.passed += ["on/shapes-dtypes", "on/deterministic", "on/guidance-on-off"]

    # -- batch independence (greedy, so random draws do not couple the rows) --------------------------------------
    if getattr(speedup, "batch_independent", True):
        together = _run(model, quantizer, labels, [speedup], cfg=1.5, top_k=1)
        for row in range(labels.shape[0]):
            alone = _run(model, quantizer, labels[row : row + 1], [speedup], cfg=1.5, top_k=1)
            for k, (a, b) in enumerate(zip(together.tokens, alone.tokens)):
                if not torch.equal(a[row : row + 1], b):
                    raise AssertionError(f"speed-up {name!r}: sample {row} depends on its batch (scale {k})")
        report.passed.append("on/batch-independent")
    else:
        report.skipped["on/batch-independent"] = "the speed-up declares batch_independent = False"

    # -- editing constraint ---------------------------------------------------------------------------------------
    source = _run(model, quantizer, labels, [], cfg=0.0, top_k=1, seed=5)
    masks = [torch.rand(t.shape, generator=torch.Generator().manual_seed(k)) < 0.5 for k, t in enumerate(source.tokens)]
    constraint = EditConstraint(tokens=source.tokens, masks=[m.to(device) for m in masks])
    edited = model.generate(
        labels,
        quantizer,
        cfg=1.5,
        top_k=16,
        generator=torch.Generator().manual_seed(1),
        speedups=[speedup],
        constraint=constraint,
    )
    for k, tokens in enumerate(edited.tokens):
        if not torch.equal(tokens[masks[k]], source.tokens[k][masks[k]]):
            raise AssertionError(f"speed-up {name!r} broke the editing constraint at scale {k}")
    report.passed.append("on/editing-constraint")

    # -- every quantizer and attention kernel ---------------------------------------------------------------------
    for quantizer_name in quantizers if quantizers is not None else QUANTIZERS.names():
        other = _quantizer(quantizer_name).to(device)
        out = _run(model, other, labels, [build(model)], cfg=1.5, top_k=16)
        if out.latent.shape != (labels.shape[0], model.code_dim, *model.scales.last):
            raise AssertionError(
                f"speed-up {name!r} with quantizer {quantizer_name!r}: latent {tuple(out.latent.shape)}"
            )
        report.passed.append(f"quantizer/{quantizer_name}")
    for kernel_name in kernels if kernels is not None else ATTENTION_KERNELS.names():
        kernel = ATTENTION_KERNELS.build(kernel_name)
        runs_here = torch.device(device).type in kernel.capabilities.devices
        if not runs_here or not getattr(kernel, "available", lambda: True)():
            report.skipped[f"kernel/{kernel_name}"] = f"does not run on {device} here"
            continue
        kernel_model = tiny_var(0, attention=kernel_name).to(device)
        exact = _run(kernel_model, quantizer, labels, [], cfg=1.5, top_k=16)
        out = _run(kernel_model, quantizer, labels, [build(kernel_model)], cfg=1.5, top_k=16)
        if out.latent.shape != exact.latent.shape:
            raise AssertionError(f"speed-up {name!r} with attention {kernel_name!r}: latent {tuple(out.latent.shape)}")
        report.passed.append(f"kernel/{kernel_name}")
    return report
