"""Sampling speed-ups (varkit.sampling): conformance of every registered one, and each one's mechanism."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch

import varkit.sampling  # noqa: F401  (registers the built-in speed-ups)
from varkit.models.generation import EditConstraint
from varkit.registry import SAMPLERS
from varkit.sampling.speedups import BudgetKVCache
from varkit.testing import check_speedup
from varkit.testing.speedup import _quantizer, tiny_var

# settings that make each built-in act on the tiny model (scales 1, 2, 3, 4; depth 3)
SETTINGS: dict[str, Any] = {
    "token_pruning": {"scales": [-2, -1], "from_block": 1, "ratio": 0.5},
    "guidance_cutoff": {"from_scale": -2},
    "kv_budget": {"budget": 6, "from_scale": 1, "queries": 4},
    "draft_refine": lambda model: {"model": tiny_var(1, depth=1), "switch_scale": -2},
    "early_stop": {"scale": -2},
}


def test_every_built_in_is_registered_and_listed() -> None:
    from varkit.registry import REGISTRIES

    assert REGISTRIES["speedup"] is SAMPLERS
    assert set(SETTINGS) <= set(SAMPLERS.names())


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_speedup_conforms(name: str) -> None:
    report = check_speedup(name, SETTINGS[name])
    assert "off/bit-identical" in report.passed and "on/editing-constraint" in report.passed
    assert any(p.startswith("quantizer/") for p in report.passed)
    assert any(p.startswith("kernel/") for p in report.passed)


def test_the_kit_catches_a_speedup_that_changes_tokens_when_off() -> None:
    from varkit.models.generation import Speedup

    class Broken(Speedup):
        OFF: ClassVar[dict[str, Any]] = {}

        def plan(self, plan: Any) -> None:
            plan.weights[-1] += 0.5  # "off" still shifts the guidance

    SAMPLERS.register("broken_for_test", Broken)
    try:
        with pytest.raises(AssertionError, match="switched off"):
            check_speedup("broken_for_test", {}, quantizers=["msvq"], kernels=["sdpa"])
    finally:
        SAMPLERS.unregister("broken_for_test")


def _block_rows(model: Any) -> tuple[list[list[int]], list[Any]]:
    """Tokens entering each block's MLP per call (a list per block), recorded by forward pre-hooks."""
    seen: list[list[int]] = [[] for _ in model.blocks]
    handles = [
        block.mlp.register_forward_pre_hook(lambda _m, args, i=i: seen[i].append(args[0].shape[0] * args[0].shape[1]))
        for i, block in enumerate(model.blocks)
    ]
    return seen, handles


def _generate(model: Any, speedups: list[Any], **options: Any) -> Any:
    quantizer = _quantizer("msvq")
    labels = torch.tensor([1, 2])
    return model.generate(labels, quantizer, generator=torch.Generator().manual_seed(0), speedups=speedups, **options)


def test_token_pruning_really_skips_tokens() -> None:
    model = tiny_var(0)
    seen, handles = _block_rows(model)
    _generate(model, [SAMPLERS.build({"name": "token_pruning", "scales": [-1], "from_block": 1, "ratio": 0.5})])
    for handle in handles:
        handle.remove()
    rows = 2 * 2  # guidance: conditional + unconditional rows
    # last scale (4x4 = 16 tokens): block 0 sees all of them, blocks 1 and 2 only the 8 kept ones
    assert seen[0][-1] == rows * 16
    assert seen[1][-1] == seen[2][-1] == rows * 8
    # other scales untouched
    assert seen[1][-2] == rows * 9


def test_guidance_cutoff_really_runs_fewer_rows() -> None:
    model = tiny_var(0)
    seen, handles = _block_rows(model)
    _generate(model, [SAMPLERS.build({"name": "guidance_cutoff", "from_scale": -1})], cfg=1.5)
    for handle in handles:
        handle.remove()
    assert seen[0][-2] == 2 * 2 * 9  # scale 3: both halves
    assert seen[0][-1] == 2 * 16  # the finest scale: conditional rows only


def test_guidance_cutoff_equals_unguided_logits_at_the_cut_scales() -> None:
    """Greedy tokens of the finest scale with the cut-off equal those of an exact run whose finest weight is 0."""
    model = tiny_var(0)
    cut = _generate(model, [SAMPLERS.build({"name": "guidance_cutoff", "from_scale": -1})], cfg=1.5, top_k=1)

    def schedule(k: int, num_scales: int, cfg: float) -> float:
        return 0.0 if k == num_scales - 1 else cfg * k / (num_scales - 1)

    exact = _generate(model, [], cfg=1.5, cfg_schedule=schedule, top_k=1)
    for a, b in zip(cut.tokens, exact.tokens):
        assert torch.equal(a, b)


def test_kv_budget_really_caps_the_cache() -> None:
    model = tiny_var(0)
    caches: list[BudgetKVCache] = []
    speedup = SAMPLERS.build({"name": "kv_budget", "budget": 6, "from_scale": 1, "queries": 4})
    original = speedup.after_scale

    def spy(k: int, runner: Any) -> None:
        original(k, runner)
        caches[:] = runner.caches
        for cache in runner.caches:
            assert cache.length <= 6 or k < 1

    speedup.after_scale = spy  # type: ignore[method-assign]
    out = _generate(model, [speedup])
    exact = _generate(model, [])
    assert all(isinstance(c, BudgetKVCache) for c in caches)
    # capacity: 1 + 4 = 5 before trimming, then at most 6 kept + 9 or 16 new
    assert caches[0].capacity == 6 + 16
    assert out.stats["kv_cache_bytes"] < exact.stats["kv_cache_bytes"]
    assert out.stats["kv_cache_peak_positions"] == 22


def test_early_stop_decodes_the_accumulated_latent() -> None:
    model = tiny_var(0)
    quantizer = _quantizer("msvq")
    out = _generate(model, [SAMPLERS.build({"name": "early_stop", "scale": 1})], top_k=1)
    exact = _generate(model, [], top_k=1)
    assert len(out.tokens) == 2 and out.stats["scales_run"] == 2
    assert torch.equal(out.tokens[1], exact.tokens[1])
    expected = (
        quantizer.decode_per_scale(exact.tokens, model.scales)[1] if hasattr(quantizer, "decode_per_scale") else None
    )
    if expected is not None:
        torch.testing.assert_close(out.latent, expected)


def test_draft_refine_hands_the_finest_scales_to_the_refiner() -> None:
    drafter, refiner = tiny_var(0), tiny_var(1, depth=1)
    seen_draft, h1 = _block_rows(drafter)
    seen_refine, h2 = _block_rows(refiner)
    out = _generate(drafter, [SAMPLERS.build({"name": "draft_refine", "model": refiner, "switch_scale": -1})], top_k=1)
    for handle in h1 + h2:
        handle.remove()
    assert len(seen_draft[0]) == 3  # scales 0..2 on the drafter
    assert len(seen_refine[0]) == 4  # prefill of scales 0..2, then the finest scale
    exact = _generate(drafter, [], top_k=1)
    assert all(torch.equal(a, b) for a, b in zip(out.tokens[:3], exact.tokens[:3]))


def test_stacked_speedups_compose() -> None:
    model = tiny_var(0)
    stack = [SAMPLERS.build(dict(name=n, **SETTINGS[n])) for n in ("token_pruning", "guidance_cutoff", "kv_budget")]
    first = _generate(model, stack, top_k=8)
    again = _generate(model, stack, top_k=8)
    assert all(torch.equal(a, b) for a, b in zip(first.tokens, again.tokens))
    assert [t.shape for t in first.tokens] == [t.shape for t in _generate(model, []).tokens]


def test_edit_constraint_checks_its_shapes() -> None:
    model = tiny_var(0)
    bad = EditConstraint(tokens=[torch.zeros(2, 1, dtype=torch.long)], masks=[torch.ones(2, 1, dtype=torch.bool)])
    with pytest.raises(ValueError, match="all 4 scales"):
        _generate(model, [], constraint=bad)
