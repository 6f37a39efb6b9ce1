"""Sampling functions (varkit.models.sampling): filters, greedy, reproducibility, Gumbel, guidance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from varkit.models.sampling import (
    apply_temperature,
    filter_logits,
    filter_top_k,
    filter_top_p,
    guided_logits,
    gumbel_softmax,
    sample_tokens,
    smooth_temperature,
)


def _logits(seed: int = 0, shape: tuple[int, ...] = (3, 5, 17)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_top_k_keeps_exactly_the_k_largest() -> None:
    logits = _logits()
    out = filter_top_k(logits, 4)
    kept = torch.isfinite(out)
    assert kept.sum(-1).eq(4).all()
    top = logits.topk(4, dim=-1).indices
    assert kept.gather(-1, top).all()
    assert torch.equal(out[kept], logits[kept])


def test_top_k_zero_or_large_is_identity() -> None:
    logits = _logits()
    assert torch.equal(filter_top_k(logits, 0), logits)
    assert torch.equal(filter_top_k(logits, 17), logits)


def _top_p_numpy(row: np.ndarray, p: float) -> np.ndarray:
    """Reference semantics: drop a token when it and every less likely token hold at most 1 - p probability."""
    order = np.argsort(row, kind="stable")
    probs = np.exp(row[order] - row.max())
    probs /= probs.sum()
    drop_sorted = np.cumsum(probs) <= 1 - p
    drop_sorted[-1] = False
    drop = np.zeros_like(drop_sorted)
    drop[order] = drop_sorted
    return drop


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 0.99])
def test_top_p_matches_numpy(p: float) -> None:
    logits = _logits(1, (6, 23)).double()
    out = filter_top_p(logits, p)
    for row, filtered in zip(logits.numpy(), out.numpy()):
        np.testing.assert_array_equal(np.isinf(filtered), _top_p_numpy(row, p))
    # the most likely token always survives
    assert torch.isfinite(out.gather(-1, logits.argmax(-1, keepdim=True))).all()


def test_filters_do_not_mutate_their_input() -> None:
    logits = _logits()
    before = logits.clone()
    filter_logits(logits, top_k=3, top_p=0.5, temperature=0.7)
    sample_tokens(logits, top_k=3, top_p=0.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(logits, before)


def test_greedy_is_argmax() -> None:
    logits = _logits()
    assert torch.equal(sample_tokens(logits, top_k=1), logits.argmax(-1))


def test_same_generator_seed_same_tokens() -> None:
    logits = _logits()
    a = sample_tokens(logits, top_k=5, generator=torch.Generator().manual_seed(3))
    b = sample_tokens(logits, top_k=5, generator=torch.Generator().manual_seed(3))
    c = sample_tokens(logits, top_k=5, generator=torch.Generator().manual_seed(4))
    assert a.shape == logits.shape[:-1] and a.dtype == torch.int64
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_samples_follow_the_filtered_distribution() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).expand(20000, 4)
    tokens = sample_tokens(logits, top_k=2, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(tokens, minlength=4).double() / tokens.numel()
    assert counts[2:].sum() == 0
    expected = torch.softmax(torch.tensor([2.0, 1.0]), 0).double()
    assert torch.allclose(counts[:2], expected, atol=0.02)


def test_temperature_sharpens() -> None:
    logits = _logits()
    assert torch.allclose(apply_temperature(logits, 0.5), logits * 2)
    assert apply_temperature(logits, 1.0) is logits
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(logits, 0.0)


def test_gumbel_softmax_rows_are_distributions_and_sharp_at_low_tau() -> None:
    logits = _logits(2, (4, 9)) * 5
    soft = gumbel_softmax(logits, 1.0, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(soft.sum(-1), torch.ones(4))
    sharp = gumbel_softmax(logits * 100, 0.01, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sharp.argmax(-1), logits.argmax(-1))
    assert sharp.max(-1).values.min() > 0.99


def test_guided_logits_formula() -> None:
    cond, uncond = _logits(3), _logits(4)
    assert torch.allclose(guided_logits(cond, uncond, 1.5), 2.5 * cond - 1.5 * uncond)
    assert guided_logits(cond, uncond, 0.0) is cond


def test_smooth_temperature_schedule() -> None:
    assert smooth_temperature(0.0) == pytest.approx(0.27)
    assert smooth_temperature(1.0) == pytest.approx(0.27 * 0.05)
    assert smooth_temperature(5.0) == 0.005


def test_top_k_fast_path_samples_the_same_distribution_as_full_filtering() -> None:
    gen = torch.Generator().manual_seed(0)
    row = torch.randn(50, generator=gen) * 2
    logits = row.expand(40000, 50)
    fast = sample_tokens(logits, top_k=7, top_p=0.6, generator=torch.Generator().manual_seed(1))
    expected = filter_logits(row[None], top_k=7, top_p=0.6).softmax(-1)[0].double()
    freq = torch.bincount(fast, minlength=50).double() / fast.numel()
    assert torch.equal(freq > 0, expected > 0)
    assert torch.allclose(freq, expected, atol=0.01)
