"""Parity of varkit's VAR with the official implementation, through ``../shared/fixtures/var_parity_a.pt``.

The fixture holds official-format weights (float16 storage of float32-exact values) and the reference's outputs
in float32: teacher-forced logits, and greedy (top-k = 1) classifier-free-guided generation with the linear ramp.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from varkit.checkpoint.io import convert_official, from_pretrained, save_pretrained
from varkit.checkpoint.var import infer_official_var_config, var_from_official
from varkit.models.var import VAR, sample_images

FIXTURE = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "var_parity_a.pt"


@pytest.fixture(scope="module")
def fixture() -> dict[str, Any]:
    if not FIXTURE.is_file():
        pytest.skip(f"parity fixture not found at {FIXTURE} (it lives in the shared checkout next to the repo)")
    return torch.load(FIXTURE, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def vqvae(fixture: dict[str, Any]) -> torch.nn.Module:
    from varkit.checkpoint.vqvae import vqvae_from_official

    return vqvae_from_official(fixture["vae_state_dict"], fixture["config"])


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_teacher_forced_logits(fixture: dict[str, Any], attention: str) -> None:
    model = var_from_official(fixture["var_state_dict"], fixture["config"], attention=attention)
    assert not model.training
    expected = fixture["expected"]
    with torch.no_grad():
        logits = model(fixture["inputs"]["labels"], expected["teacher_forcing_input"].float())
    assert logits.shape == expected["logits"].shape
    torch.testing.assert_close(logits, expected["logits"].float(), atol=1e-4, rtol=0)


def test_teacher_forcing_inputs_from_the_fixture_tokens(fixture: dict[str, Any], vqvae: torch.nn.Module) -> None:
    model = var_from_official(fixture["var_state_dict"], fixture["config"])
    expected = fixture["expected"]
    inputs = vqvae.quantizer.teacher_forcing_inputs(expected["indices_per_scale"], model.scales)
    torch.testing.assert_close(inputs, expected["teacher_forcing_input"].float(), atol=1e-4, rtol=0)


def test_greedy_cfg_generation(fixture: dict[str, Any], vqvae: torch.nn.Module) -> None:
    model = var_from_official(fixture["var_state_dict"], fixture["config"])
    expected = fixture["expected"]
    labels = fixture["inputs"]["labels"]
    out = model.generate(labels, vqvae.quantizer, cfg=fixture["config"]["cfg"], cfg_schedule="linear", top_k=1)
    for k, (got, want) in enumerate(zip(out.tokens, expected["greedy_cfg_tokens_per_scale"], strict=True)):
        assert torch.equal(got, want), f"greedy tokens differ at scale {k}"
    images = sample_images(model, vqvae, labels, cfg=fixture["config"]["cfg"], top_k=1)
    torch.testing.assert_close(images, expected["greedy_cfg_images_0_1"].float(), atol=1e-4, rtol=0)


def test_inferred_config_matches_the_fixture(fixture: dict[str, Any]) -> None:
    inferred = infer_official_var_config(fixture["var_state_dict"])
    for key, value in inferred.items():
        assert fixture["config"].get(key, 4.0 if key == "mlp_ratio" else None) == value, key


def test_convert_and_reload(fixture: dict[str, Any], tmp_path: Path) -> None:
    written = convert_official(FIXTURE, tmp_path)
    assert set(written) == {"var", "vqvae"}
    model = from_pretrained(written["var"], expect="var")
    assert isinstance(model, VAR)
    expected = fixture["expected"]
    with torch.no_grad():
        logits = model(fixture["inputs"]["labels"], expected["teacher_forcing_input"].float())
    torch.testing.assert_close(logits, expected["logits"].float(), atol=1e-4, rtol=0)
    vqvae = from_pretrained(written["vqvae"], expect="vqvae")
    out = model.generate(fixture["inputs"]["labels"], vqvae.quantizer, cfg=fixture["config"]["cfg"], top_k=1)
    assert all(torch.equal(a, b) for a, b in zip(out.tokens, expected["greedy_cfg_tokens_per_scale"]))
    # bf16 round trip keeps the dtype; the wrong kind is refused
    save_pretrained(model.to(torch.bfloat16), tmp_path / "bf16")
    assert from_pretrained(tmp_path / "bf16").head.weight.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="expected 'vqvae'"):
        from_pretrained(written["var"], expect="vqvae")
