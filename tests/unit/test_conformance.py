"""Every registered attention kernel, scale schedule and guidance schedule passes the conformance kit."""

from __future__ import annotations

import inspect

import pytest
import torch

import varkit
from varkit import ATTENTION_KERNELS, CFG_SCHEDULES, SCALE_SCHEDULES
from varkit.testing import check_attention_kernel, check_cfg_schedule, check_scale_schedule

CUDA = torch.cuda.is_available()


def _kernel_params() -> list:
    params = []
    for name in ATTENTION_KERNELS.names():
        kernel = ATTENTION_KERNELS.build(name)
        if "cpu" in kernel.capabilities.devices:
            params.append(pytest.param(name, id=name))
        else:
            params.append(
                pytest.param(
                    name,
                    id=name,
                    marks=[
                        pytest.mark.gpu,
                        pytest.mark.skipif(not CUDA, reason=f"attention kernel {name!r} runs on CUDA only"),
                    ],
                )
            )
    return params


@pytest.mark.parametrize("name", _kernel_params())
def test_attention_kernel_conforms(name: str) -> None:
    kernel = ATTENTION_KERNELS.build(name)
    device = "cpu" if "cpu" in kernel.capabilities.devices else "cuda"
    if not getattr(kernel, "available", lambda: True)():
        pytest.skip(f"attention kernel {name!r} is not installed here")
    report = check_attention_kernel(kernel, device=device)
    # the kit must have compared something for every declared dtype on this device
    assert any(p.startswith("forward/") for p in report.passed), report
    assert any(p.startswith("kvcache/") for p in report.passed), report


# Arguments for schedule factories that need some: whole-word names shared by the built-ins.
_SCHEDULE_ARGS = {"num_scales": 6, "latent_size": 16, "sizes": [1, 2, 3, 4, 6, 8, [10, 12]]}


def _schedule_kwargs(name: str) -> dict:
    factory = SCALE_SCHEDULES.get(name)
    kwargs = {}
    for param in inspect.signature(factory).parameters.values():
        if param.default is inspect.Parameter.empty and param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            if param.name not in _SCHEDULE_ARGS:
                pytest.fail(f"scale schedule {name!r} needs argument {param.name!r}; add a value to _SCHEDULE_ARGS")
            kwargs[param.name] = _SCHEDULE_ARGS[param.name]
    return kwargs


@pytest.mark.parametrize("name", SCALE_SCHEDULES.names())
def test_scale_schedule_conforms(name: str) -> None:
    kwargs = _schedule_kwargs(name)
    scales = check_scale_schedule(SCALE_SCHEDULES.get(name), **kwargs)
    if "latent_size" in kwargs:
        assert scales.last == (kwargs["latent_size"], kwargs["latent_size"])
        assert len(scales) == kwargs["num_scales"]


@pytest.mark.parametrize(("name", "num_scales", "latent_size"), [("linear", 10, 16), ("geometric", 10, 32)])
def test_ramp_schedules_other_sizes(name: str, num_scales: int, latent_size: int) -> None:
    scales = check_scale_schedule(SCALE_SCHEDULES.get(name), num_scales=num_scales, latent_size=latent_size)
    assert len(scales) == num_scales and scales.last == (latent_size, latent_size)


def test_released_schedules_token_counts() -> None:
    assert check_scale_schedule(SCALE_SCHEDULES.get("var_256")).total_tokens == 680
    assert check_scale_schedule(SCALE_SCHEDULES.get("var_512")).last == (32, 32)


@pytest.mark.parametrize("name", CFG_SCHEDULES.names())
def test_cfg_schedule_conforms(name: str) -> None:
    check_cfg_schedule(CFG_SCHEDULES.build(name))


@pytest.mark.parametrize("num_scales", [2, 10])
@pytest.mark.parametrize("cfg", [0.0, 1.5, 4.0])
def test_linear_guidance_is_the_reference_ramp(num_scales: int, cfg: float) -> None:
    schedule = CFG_SCHEDULES.build("linear")
    for k in range(num_scales):
        assert schedule(k, num_scales, cfg) == pytest.approx(cfg * k / (num_scales - 1))


def test_kits_reject_bad_components() -> None:
    """The kits are not rubber stamps: broken schedules fail them."""
    with pytest.raises(AssertionError, match="cfg=0"):
        check_cfg_schedule(lambda k, n, cfg: 1.0)
    with pytest.raises(AssertionError, match="finite"):
        check_cfg_schedule(lambda k, n, cfg: float("nan") if cfg else 0.0)
    with pytest.raises(AssertionError, match="Scales"):
        check_scale_schedule(lambda: [1, 2, 3])  # type: ignore[arg-type, return-value]
    calls = iter(range(1, 100))
    with pytest.raises(AssertionError, match="deterministic"):
        check_scale_schedule(lambda: varkit.Scales.of([1, next(calls) + 1]))
