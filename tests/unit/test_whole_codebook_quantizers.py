"""msibq, mssimvq, msbsq: the property each paper is about, checked against a direct computation."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from varkit import QUANTIZERS, Scales
from varkit.quantizers import MultiScaleBSQ, MultiScaleIBQ, MultiScaleSimVQ
from varkit.quantizers.bsq import bits_to_indices, indices_to_bits
from varkit.testing import check_quantizer

SCALES = Scales.of([1, 2, 4])


def test_ibq_trains_every_code_each_step() -> None:
    """IBQ's point: the straight-through softmax sends a gradient to every row, not only the selected ones."""
    torch.manual_seed(0)
    q = MultiScaleIBQ(codebook_size=64, code_dim=8, phi_ratio=0.0)
    out = q(torch.randn(2, 8, 4, 4), SCALES)
    used = out.code_counts.sum(0) > 0
    assert not bool(used.all())  # some codes are unused in this batch ...
    (grad,) = torch.autograd.grad(out.loss, q.codebook.weight)
    assert bool((grad.abs().sum(1) > 0).all())  # ... yet every code gets a gradient
    assert "double_quantization_loss" in out.extras


def test_ibq_index_is_argmax_of_inner_products() -> None:
    torch.manual_seed(0)
    q = MultiScaleIBQ(codebook_size=32, code_dim=8, phi_ratio=0.0)
    z = torch.randn(3, 8, 1, 1)
    (idx,) = q.encode(z, Scales.of([1]))
    expected = (z.flatten(1) @ q.codebook.weight.T).argmax(1)
    assert torch.equal(idx[:, 0], expected)


def test_msvq_trains_only_selected_codes_for_contrast() -> None:
    torch.manual_seed(0)
    q = QUANTIZERS.build({"name": "msvq", "codebook_size": 64, "code_dim": 8, "phi_ratio": 0.0})
    out = q(torch.randn(2, 8, 4, 4), SCALES)
    (grad,) = torch.autograd.grad(out.loss, q.codebook.weight)
    assert torch.equal(grad.abs().sum(1) > 0, out.code_counts.sum(0) > 0)


def test_simvq_codebook_is_frozen_basis_times_linear_map() -> None:
    torch.manual_seed(0)
    q = MultiScaleSimVQ(codebook_size=32, code_dim=8, phi_ratio=0.0)
    assert torch.allclose(q.lookup(torch.arange(32)[None])[0], q.basis @ q.projection.weight.T)
    out = q(torch.randn(2, 8, 4, 4), SCALES)
    (grad,) = torch.autograd.grad(out.loss, q.projection.weight)
    assert grad.abs().sum() > 0 and "basis" in q.state_dict() and not q.basis.requires_grad
    # nearest code by Euclidean distance in C W
    z = torch.randn(5, 8, 1, 1)
    (idx,) = q.encode(z, Scales.of([1]))
    codebook = q.basis @ q.projection.weight.T
    assert torch.equal(idx[:, 0], torch.cdist(z.flatten(1), codebook).argmin(1))


@pytest.mark.parametrize("name", ["msibq", "mssimvq"])
def test_per_scale_vocabularies_restrict_each_scale(name: str) -> None:
    torch.manual_seed(0)
    q = QUANTIZERS.build({"name": name, "codebook_size": 64, "code_dim": 8, "codebook_sizes": [2, 8, 64]})
    check_quantizer(q, SCALES)
    indices = q.encode(torch.randn(16, 8, 4, 4), SCALES)
    assert [int(i.max()) < v for i, v in zip(indices, [2, 8, 64])] == [True] * 3
    assert q.vocabulary_sizes(3) == [2, 8, 64]
    with pytest.raises(ValueError, match="3 entries for 4 scales"):
        q.encode(torch.randn(1, 8, 4, 4), Scales.of([1, 2, 3, 4]))
    with pytest.raises(ValueError, match="codebook_sizes"):
        QUANTIZERS.build({"name": name, "codebook_size": 8, "code_dim": 8, "codebook_sizes": [2, 16]})


def test_bsq_codes_are_signs_on_the_sphere() -> None:
    torch.manual_seed(0)
    q = MultiScaleBSQ(bits=6, code_dim=8, phi_ratio=0.0)
    z = torch.randn(4, 8, 1, 1)
    (idx,) = q.encode(z, Scales.of([1]))
    projected = F.linear(z.flatten(1), q.project_in.weight, q.project_in.bias)
    assert torch.equal(idx[:, 0], bits_to_indices(projected >= 0))
    assert torch.equal(bits_to_indices(indices_to_bits(idx, 6)), idx)
    corners = (indices_to_bits(idx[:, 0], 6).float() * 2 - 1) / math.sqrt(6)
    assert torch.allclose(corners.norm(dim=-1), torch.ones(4))
    assert torch.allclose(q.lookup(idx)[:, 0], F.linear(corners, q.project_out.weight, q.project_out.bias))


def test_bsq_factorised_entropy_matches_the_full_softmax_over_all_codes() -> None:
    """Per-sample entropy: the factorised sum over bits equals the entropy of the softmax over all 2^bits corners."""
    torch.manual_seed(0)
    bits, tau = 5, 0.3
    q = MultiScaleBSQ(bits=bits, code_dim=8, entropy_temperature=tau)
    unit = F.normalize(torch.randn(7, bits), dim=-1)
    per_sample, codebook = q._entropy(unit)
    corners = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=bits))) / math.sqrt(bits)
    probs = F.softmax(-torch.cdist(unit, corners).square() / tau, dim=1)
    direct = -(probs * probs.log()).sum(1).mean()
    assert per_sample.item() == pytest.approx(direct.item(), rel=1e-4)
    # codebook entropy: the sum of per-bit entropies of the averaged bit marginals (the paper's factorised form)
    marginal = torch.stack([(probs * (corners[:, i] > 0)).sum(1) for i in range(bits)], 1).mean(0)
    expected = -(marginal * marginal.log() + (1 - marginal) * (1 - marginal).log()).sum()
    assert codebook.item() == pytest.approx(expected.item(), rel=1e-4)
    out = q(torch.randn(2, 8, 4, 4), SCALES)
    assert {"per_sample_entropy", "codebook_entropy"} <= set(out.extras)


def test_bsq_many_bits_has_no_wide_tensors() -> None:
    q = MultiScaleBSQ(bits=40, code_dim=8)
    idx = q.encode(torch.randn(2, 8, 2, 2), Scales.of([1, 2]))
    assert int(idx[1].max()) < 2**40 and q.codebook_size == 2**40
    assert q.decode(idx, Scales.of([1, 2])).shape == (2, 8, 2, 2)
