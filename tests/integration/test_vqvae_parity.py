"""Exact parity of the varkit VQVAE with the official VAR tokenizer (fixture ``../shared/fixtures/var_parity_a.pt``).

The fixture holds official-format weights (float16, exactly representable) and outputs of the reference code in
float32; see the fixture README. Indices must match exactly, tensors within 1e-4.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from varkit.checkpoint.vqvae import CheckpointKeyError, vqvae_from_official
from varkit.models.vqvae import VQVAE

FIXTURE = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "var_parity_a.pt"
ATOL = 1e-4

pytestmark = pytest.mark.skipif(not FIXTURE.is_file(), reason=f"parity fixture not found at {FIXTURE}")


@pytest.fixture(scope="module")
def fixture() -> dict[str, Any]:
    return torch.load(FIXTURE, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def vae(fixture: dict[str, Any]) -> VQVAE:
    model = vqvae_from_official(fixture["vae_state_dict"], fixture["config"])
    assert not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    return model


@pytest.fixture(scope="module")
def images(fixture: dict[str, Any]) -> torch.Tensor:
    return fixture["inputs"]["images"].float()


def test_indices_per_scale_are_identical(vae: VQVAE, images: torch.Tensor, fixture: dict[str, Any]) -> None:
    expected = fixture["expected"]["indices_per_scale"]
    tokens = vae.tokenize(images)
    assert len(tokens) == len(expected)
    for k, (got, want) in enumerate(zip(tokens, expected)):
        assert torch.equal(got, want), f"scale {k}: {int((got != want).sum())} tokens differ"


def test_accumulated_latent_per_scale(vae: VQVAE, images: torch.Tensor, fixture: dict[str, Any]) -> None:
    with torch.no_grad():
        _, per_scale = vae.quantizer.encode_per_scale(vae.encode_latents(images), vae.scales)
    decoded = vae.quantizer.decode_per_scale(fixture["expected"]["indices_per_scale"], vae.scales)
    for got, from_indices, want in zip(per_scale, decoded, fixture["expected"]["fhat_per_scale"]):
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
        torch.testing.assert_close(from_indices, want, atol=ATOL, rtol=0)


def test_reconstruction(vae: VQVAE, images: torch.Tensor, fixture: dict[str, Any]) -> None:
    torch.testing.assert_close(vae.reconstruct(images), fixture["expected"]["reconstruction"], atol=ATOL, rtol=0)


def test_decoded_from_indices(vae: VQVAE, fixture: dict[str, Any]) -> None:
    got = vae.decode_indices(fixture["expected"]["indices_per_scale"])
    torch.testing.assert_close(got, fixture["expected"]["decoded_from_indices"], atol=ATOL, rtol=0)


def test_teacher_forcing_input(vae: VQVAE, fixture: dict[str, Any]) -> None:
    got = vae.quantizer.teacher_forcing_inputs(fixture["expected"]["indices_per_scale"], vae.scales)
    torch.testing.assert_close(got, fixture["expected"]["teacher_forcing_input"], atol=ATOL, rtol=0)


def test_training_forward_value_matches_the_reference_latent(
    vae: VQVAE, images: torch.Tensor, fixture: dict[str, Any]
) -> None:
    reconstruction, out = vae(images)
    torch.testing.assert_close(out.quantized, fixture["expected"]["fhat_per_scale"][-1], atol=ATOL, rtol=0)
    torch.testing.assert_close(reconstruction.clamp(-1, 1), fixture["expected"]["reconstruction"], atol=ATOL, rtol=0)


def test_every_official_key_is_accounted_for(fixture: dict[str, Any]) -> None:
    state = dict(fixture["vae_state_dict"])
    missing = dict(state)
    del missing["quantize.embedding.weight"]
    with pytest.raises(CheckpointKeyError, match=r"missing \['quantizer\.codebook\.weight'\]"):
        vqvae_from_official(missing, fixture["config"])
    extra = {**state, "decoder.up.0.block.9.conv1.weight": torch.zeros(1)}
    with pytest.raises(CheckpointKeyError, match=r"unexpected \['decoder\.stages\.4\.blocks\.9\.conv1\.weight'\]"):
        vqvae_from_official(extra, fixture["config"])
    unknown = {**state, "quantize.codebook_usage": torch.zeros(1)}
    with pytest.raises(CheckpointKeyError, match=r"quantize\.codebook_usage"):
        vqvae_from_official(unknown, fixture["config"])
    wrong_config = {**fixture["config"], "share_quant_resi": 2}
    with pytest.raises(CheckpointKeyError, match="unexpected"):
        vqvae_from_official(state, wrong_config)
