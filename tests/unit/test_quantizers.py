"""Multi-scale quantizers: every registered one conforms; msvq, msfsq and φ match plain re-derivations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from varkit import QUANTIZERS, Scales
from varkit.contracts import MultiScaleQuantizer
from varkit.quantizers import MultiScaleFSQ, MultiScaleVQ, ResidualPhi
from varkit.testing import check_quantizer

#: small constructor arguments for the built-ins; other (plugin) quantizers get only code_dim
SMALL_ARGS = {
    "msvq": {"codebook_size": 32, "code_dim": 8},
    "msfsq": {"levels": [5, 4, 3], "code_dim": 8},
    "msibq": {"codebook_size": 32, "code_dim": 8},
    "mssimvq": {"codebook_size": 32, "code_dim": 8},
    "msbsq": {"bits": 5, "code_dim": 8},
}

SCALES = {
    "square": Scales.of([1, 2, 4]),
    "non_square": Scales.of([(1, 2), (2, 3), (3, 5)]),
    "single": Scales.of([3]),
}


def build_small(name: str, **extra: object) -> MultiScaleQuantizer:
    torch.manual_seed(0)
    return QUANTIZERS.build({"name": name, **SMALL_ARGS.get(name, {"code_dim": 8}), **extra})


@pytest.mark.parametrize("scales", SCALES.values(), ids=SCALES.keys())
@pytest.mark.parametrize("name", QUANTIZERS.names())
def test_every_registered_quantizer_conforms(name: str, scales: Scales) -> None:
    check_quantizer(build_small(name), scales, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("phi_count", [0, 1, 2, 4])
def test_msvq_conforms_for_every_phi_variant(phi_count: int) -> None:
    scales = SCALES["square"]
    quantizer = build_small("msvq", phi_count=phi_count, num_scales=len(scales))
    check_quantizer(quantizer, scales)


def test_check_quantizer_catches_a_broken_quantizer() -> None:
    class NoStraightThrough(MultiScaleVQ):
        def forward(self, latents, scales):  # type: ignore[no-untyped-def]
            out = super().forward(latents, scales)
            out.quantized = out.quantized.detach() + 0 * latents
            return out

    with pytest.raises(AssertionError, match="straight through"):
        check_quantizer(NoStraightThrough(codebook_size=16, code_dim=4), Scales.of([1, 2]))


# -- msvq against a direct re-derivation of VAR Algorithm 1 ------------------------------------------------------
def reference_msvq_indices(quantizer: MultiScaleVQ, latents: torch.Tensor, sizes: list[tuple[int, int]]) -> list:
    """Brute-force nearest codes (cdist) with the residual scheme written out directly."""
    codebook = quantizer.codebook.weight.detach()
    residual = latents.clone()
    height, width = latents.shape[-2:]
    out = []
    for k, size in enumerate(sizes):
        last = k == len(sizes) - 1
        small = residual if last else F.interpolate(residual, size=size, mode="area")
        flat = small.permute(0, 2, 3, 1).reshape(-1, small.shape[1])
        idx = torch.cdist(flat.double(), codebook.double()).argmin(1)
        out.append(idx.view(latents.shape[0], -1))
        codes = codebook[idx].view(latents.shape[0], *size, -1).permute(0, 3, 1, 2)
        if not last:
            codes = F.interpolate(codes, size=(height, width), mode="bicubic")
        conv = quantizer.phi.convs[quantizer.phi.index_for(k, len(sizes))]
        codes = 0.5 * codes + 0.5 * F.conv2d(codes, conv.weight, conv.bias, padding=1)
        residual = residual - codes
    return out


def test_msvq_indices_match_brute_force_nearest_codes() -> None:
    torch.manual_seed(0)
    quantizer = MultiScaleVQ(codebook_size=64, code_dim=6)
    torch.nn.init.normal_(quantizer.codebook.weight)
    latents = torch.randn(3, 6, 4, 5)
    sizes = [(1, 1), (2, 3), (4, 5)]
    got = quantizer.encode(latents, Scales.of(sizes))
    want = reference_msvq_indices(quantizer, latents, sizes)
    for a, b in zip(got, want):
        assert torch.equal(a, b)


def test_msvq_loss_and_straight_through_value() -> None:
    torch.manual_seed(0)
    quantizer = MultiScaleVQ(codebook_size=16, code_dim=4, beta=0.25)
    scales = Scales.of([1, 2])
    latents = torch.randn(2, 4, 2, 2)
    out = quantizer(latents, scales)
    per_scale = quantizer.decode_per_scale(out.indices, scales)
    expected = sum(1.25 * F.mse_loss(f, latents) for f in per_scale) / len(per_scale)
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.quantized, per_scale[-1])
    assert out.code_counts.sum().item() == 2 * (1 + 4)


def test_msvq_cosine_search_picks_the_most_aligned_code() -> None:
    quantizer = MultiScaleVQ(codebook_size=3, code_dim=2, normalize_codes=True, phi_ratio=0.0)
    with torch.no_grad():
        quantizer.codebook.weight.copy_(torch.tensor([[10.0, 0.0], [0.0, 0.1], [-1.0, 0.0]]))
    # cosine search compares directions only; Euclidean search picks code 1, the nearest point, for all three
    vectors = torch.tensor([[0.05, 1.0], [1.0, 0.01], [-0.2, 0.0]])
    assert quantizer.nearest_codes(vectors).tolist() == [1, 0, 2]
    euclidean = MultiScaleVQ(codebook_size=3, code_dim=2, phi_ratio=0.0)
    euclidean.codebook.weight.data.copy_(quantizer.codebook.weight.data)
    assert euclidean.nearest_codes(vectors).tolist() == [1, 1, 1]


def test_bf16_autocast_forward_runs_and_matches_fp32_indices() -> None:
    torch.manual_seed(0)
    quantizer = MultiScaleVQ(codebook_size=32, code_dim=8)
    torch.nn.init.normal_(quantizer.codebook.weight)
    scales = Scales.of([1, 2, 4])
    # easy inputs: latents that are exactly codebook vectors at the finest scale after the coarse scales
    latents = torch.randn(2, 8, 4, 4)
    full = quantizer(latents, scales)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = quantizer(latents.bfloat16(), scales)
        tokens = quantizer.encode(latents.bfloat16(), scales)
    assert mixed.quantized.dtype == torch.float32
    # bf16 inputs round the latents, so compare against fp32 quantization of the same rounded values
    rounded = quantizer.encode(latents.bfloat16().float(), scales)
    for a, b, c in zip(mixed.indices, tokens, rounded):
        assert torch.equal(a, c) and torch.equal(b, c)
    assert torch.equal(full.indices[0], rounded[0])


def test_bf16_parameters_still_quantize_in_float32() -> None:
    torch.manual_seed(0)
    quantizer = MultiScaleVQ(codebook_size=32, code_dim=8)
    scales = Scales.of([1, 2, 4])
    latents = torch.randn(2, 8, 4, 4)
    quantizer.to(torch.bfloat16)
    tokens = quantizer.encode(latents, scales)
    assert quantizer.decode(tokens, scales).dtype == torch.float32
    assert quantizer.teacher_forcing_inputs(tokens, scales).dtype == torch.float32


def test_scale_mismatch_is_refused() -> None:
    quantizer = MultiScaleVQ(codebook_size=8, code_dim=4)
    with pytest.raises(ValueError, match="latent size"):
        quantizer.encode(torch.randn(1, 4, 5, 5), Scales.of([1, 2, 4]))


# -- φ -------------------------------------------------------------------------------------------------------------
def test_phi_selection_follows_nearest_tick() -> None:
    partial = ResidualPhi(channels=4, ratio=0.5, count=4)
    # 4 convs stand for positions linspace(1/12, 11/12, 4); 10 scales sit at k/9 (scale 2 is a float tie that the
    # released rule breaks towards conv 1, which this must reproduce to load the released weights faithfully)
    ticks = np.linspace(1 / 12, 11 / 12, 4)
    expected = [int(np.argmin(np.abs(ticks - k / 9))) for k in range(10)]
    assert [partial.index_for(k, 10) for k in range(10)] == expected == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    shared = ResidualPhi(channels=4, ratio=0.5, count=1)
    assert {shared.index_for(k, 10) for k in range(10)} == {0}
    per_scale = ResidualPhi(channels=4, ratio=0.5, count=0, num_scales=10)
    assert [per_scale.index_for(k, 10) for k in range(10)] == list(range(10))
    assert len(per_scale.convs) == 10
    three = ResidualPhi(channels=4, ratio=0.5, count=3)
    assert [three.index_for(k, 5) for k in range(5)] == [0, 0, 1, 2, 2]  # ticks 1/6, 1/2, 5/6


def test_phi_mixes_identity_and_conv() -> None:
    torch.manual_seed(0)
    phi = ResidualPhi(channels=3, ratio=0.25, count=1)
    codes = torch.randn(2, 3, 4, 4)
    conv = phi.convs[0]
    expected = 0.75 * codes + 0.25 * F.conv2d(codes, conv.weight, conv.bias, padding=1)
    torch.testing.assert_close(phi(codes, 0, 3), expected)
    identity = ResidualPhi(channels=3, ratio=0.0, count=4)
    assert torch.equal(identity(codes, 2, 3), codes) and not list(identity.parameters())


def test_phi_count_zero_needs_num_scales() -> None:
    with pytest.raises(ValueError, match="num_scales"):
        MultiScaleVQ(codebook_size=8, code_dim=4, phi_count=0)


# -- msfsq ---------------------------------------------------------------------------------------------------------
def test_msfsq_round_trip_is_exact() -> None:
    torch.manual_seed(0)
    quantizer = MultiScaleFSQ(levels=[8, 5, 4], code_dim=6)
    scales = Scales.of([1, (2, 3), (3, 4)])
    latents = torch.randn(3, 6, 3, 4) * 2
    out = quantizer(latents, scales)
    assert torch.equal(quantizer.decode(quantizer.encode(latents, scales), scales), out.quantized)
    assert quantizer.codebook_size == 8 * 5 * 4


def test_msfsq_grid_is_a_bijection_and_bounded() -> None:
    quantizer = MultiScaleFSQ(levels=[3, 4, 5], code_dim=4)
    everything = torch.arange(quantizer.codebook_size)
    grid = quantizer.indices_to_grid(everything)
    assert grid.abs().max() <= 1.0
    assert torch.unique(grid, dim=0).shape[0] == quantizer.codebook_size
    # the grid of a level-L channel has L evenly spaced values
    for channel, levels in enumerate([3, 4, 5]):
        assert torch.unique(grid[:, channel]).numel() == levels


def test_msfsq_indices_match_plain_rounding() -> None:
    torch.manual_seed(0)
    levels = [8, 6, 5]
    quantizer = MultiScaleFSQ(levels=levels, code_dim=3, phi_ratio=0.0)
    latents = torch.randn(2, 3, 2, 2) * 3
    (indices,) = quantizer.encode(latents, Scales.of([2]))
    projected = latents.permute(0, 2, 3, 1).reshape(2, 4, 3) @ quantizer.project_in.weight.T + quantizer.project_in.bias
    expected = torch.zeros(2, 4, dtype=torch.int64)
    radix = 1
    for i, level in enumerate(levels):
        half = (level - 1) * (1 + 1e-3) / 2
        offset = 0.5 if level % 2 == 0 else 0.0
        bounded = torch.tanh(projected[..., i] + math.atanh(offset / half)) * half - offset
        expected += (torch.round(bounded).long() + level // 2) * radix
        radix *= level
    assert torch.equal(indices, expected)


def test_msfsq_trains_its_projections_through_rounding() -> None:
    torch.manual_seed(0)
    quantizer = MultiScaleFSQ(levels=[5, 5], code_dim=4)
    out = quantizer(torch.randn(2, 4, 2, 2), Scales.of([1, 2]))
    out.loss.backward()
    assert quantizer.project_in.weight.grad is not None and quantizer.project_in.weight.grad.abs().sum() > 0
    assert quantizer.project_out.weight.grad.abs().sum() > 0
