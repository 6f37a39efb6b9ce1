"""The multi-scale VQVAE: shapes, gradients, scale validation, fast bf16 decoding, config building, key map."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from varkit.checkpoint.vqvae import (
    OFFICIAL_VQVAE_KEY_RULES,
    CheckpointKeyError,
    convert_official_vqvae_state_dict,
    official_key_to_varkit,
)
from varkit.contracts import InvalidScalesError, QuantizerOutput
from varkit.models.vqvae import VQVAE, VQVAE_PRESETS, build_vqvae, vqvae_preset
from varkit.quantizers import MultiScaleVQ

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.fixture(scope="module")
def tiny() -> VQVAE:
    torch.manual_seed(0)
    return vqvae_preset("vqvae_tiny").eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_shapes_and_ranges(tiny: VQVAE, images: torch.Tensor) -> None:
    assert tiny.downsample == 4 and tiny.latent_size() == (4, 4) and tiny.latent_size(32) == (8, 8)
    reconstruction, out = tiny(images)
    assert reconstruction.shape == images.shape and isinstance(out, QuantizerOutput)
    assert out.quantized.shape == (2, 8, 4, 4) and out.code_counts.shape == (4, 64)
    tokens = tiny.tokenize(images)
    assert [tuple(t.shape) for t in tokens] == [(2, 1), (2, 4), (2, 9), (2, 16)]
    for a, b in zip(tokens, out.indices):
        assert torch.equal(a, b)
    decoded = tiny.decode_indices(tokens)
    assert decoded.shape == images.shape and decoded.min() >= -1 and decoded.max() <= 1
    torch.testing.assert_close(tiny.reconstruct(images), decoded)
    torch.testing.assert_close(decoded, reconstruction.clamp(-1, 1), atol=1e-5, rtol=0)
    previews = tiny.decode_indices_per_scale(tokens)
    assert len(previews) == 4
    torch.testing.assert_close(previews[-1], decoded)


def test_straight_through_gradient_reaches_the_encoder(images: torch.Tensor) -> None:
    torch.manual_seed(0)
    vae = vqvae_preset("vqvae_tiny").train()
    reconstruction, out = vae(images)
    (F.mse_loss(reconstruction, images) + out.loss).backward()
    for name in ("encoder.stem.weight", "quant_conv.weight", "quantizer.codebook.weight", "decoder.stem.weight"):
        grad = vae.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    # the reconstruction term alone reaches the encoder only through the straight-through estimator
    vae.zero_grad()
    reconstruction, _ = vae(images)
    F.mse_loss(reconstruction, images).backward()
    assert vae.encoder.stem.weight.grad.abs().sum() > 0
    assert vae.quantizer.codebook.weight.grad is None or vae.quantizer.codebook.weight.grad.abs().sum() == 0


def test_bf16_autocast_training_step_runs(tiny: VQVAE, images: torch.Tensor) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reconstruction, out = tiny(images)
        tokens = tiny.tokenize(images)
    assert out.quantized.dtype == torch.float32 and torch.isfinite(reconstruction).all()
    assert all(t.dtype == torch.int64 for t in tokens)
    # the encoder runs in bf16, so tokens may move; the coarse ones on these inputs do not
    assert torch.equal(tokens[0], tiny.tokenize(images)[0])


def test_scale_schedule_must_end_at_the_latent_size() -> None:
    with pytest.raises(InvalidScalesError, match=r"16x16 downsampled 4x give a 4x4 latent"):
        build_vqvae(VQVAE_PRESETS["vqvae_tiny"]["tokenizer"], {"name": "msvq"}, [1, 2, 3])


def test_non_square_images() -> None:
    torch.manual_seed(0)
    preset = VQVAE_PRESETS["vqvae_tiny"]
    vae = build_vqvae({**preset["tokenizer"], "image_size": [8, 16]}, preset["quantizer"], [(1, 2), (2, 4)]).eval()
    images = torch.rand(2, 3, 8, 16) * 2 - 1
    tokens = vae.tokenize(images)
    assert [tuple(t.shape) for t in tokens] == [(2, 2), (2, 8)]
    assert vae.decode_indices(tokens).shape == images.shape


def test_decoder_in_bf16_channels_last_matches_fp32(images: torch.Tensor) -> None:
    torch.manual_seed(0)
    vae = vqvae_preset("vqvae_tiny").eval()
    tokens = vae.tokenize(images)
    reference = vae.decode_indices(tokens)
    vae.decoder_to(torch.bfloat16)
    assert vae.decoder.stem.weight.dtype == torch.bfloat16
    assert vae.decoder.stem.weight.is_contiguous(memory_format=torch.channels_last)
    fast = vae.decode_indices(tokens)
    assert fast.dtype == torch.float32
    assert (fast - reference).abs().max() < 0.05
    assert torch.equal(vae.tokenize(images)[-1], tokens[-1])  # the encoder is untouched
    vae.decoder_to(torch.float32, channels_last=False)  # back to float32 (bf16-rounded weights)
    assert vae.decoder.stem.weight.dtype == torch.float32 and vae.decoder.stem.weight.is_contiguous()
    assert (vae.decode_indices(tokens) - reference).abs().max() < 0.05


def test_decoder_in_fp32_channels_last_matches_the_contiguous_decoder(images: torch.Tensor) -> None:
    torch.manual_seed(0)
    vae = vqvae_preset("vqvae_tiny").eval()
    tokens = vae.tokenize(images)
    reference = vae.decode_indices(tokens)
    vae.decoder_to(torch.float32)  # what varkit sample/edit do for float32 inference
    assert vae.decoder.stem.weight.is_contiguous(memory_format=torch.channels_last)
    assert not vae.decoder.stem.weight.is_contiguous()
    torch.testing.assert_close(vae.decode_indices(tokens), reference, rtol=0, atol=1e-5)
    vae.decoder_to(torch.float32, max_batch=1)  # image by image: the same images
    assert images.shape[0] > 1
    torch.testing.assert_close(vae.decode_indices(tokens), reference, rtol=0, atol=1e-5)


def test_config_round_trip_rebuilds_the_same_model() -> None:
    torch.manual_seed(0)
    vae = vqvae_preset("vqvae_tiny")
    assert vae.config is not None
    again = build_vqvae(**vae.config)
    again.load_state_dict(vae.state_dict())
    assert again.config == vae.config


@pytest.mark.parametrize("quantizer", ["msvq", "msfsq"])
@pytest.mark.parametrize("tokenizer", ["vqvae_tiny", "vqvae_demo"])
def test_yaml_configs_build(compose_cfg, tokenizer: str, quantizer: str) -> None:
    # tokenizer=<name> options are generated from VQVAE_PRESETS (varkit.models.presets): compose what users get
    tokenizer_cfg = OmegaConf.to_container(compose_cfg("train_tokenizer", [f"tokenizer={tokenizer}"]).tokenizer)
    quantizer_cfg = OmegaConf.to_container(OmegaConf.load(CONF / "quantizer" / f"{quantizer}.yaml"))
    assert quantizer_cfg["name"] == quantizer
    assert {k: v for k, v in tokenizer_cfg.items() if k != "name"} == VQVAE_PRESETS[tokenizer]["tokenizer"]
    vae = build_vqvae(tokenizer_cfg, quantizer_cfg, VQVAE_PRESETS[tokenizer]["scales"])
    assert vae.quantizer.code_dim == tokenizer_cfg["latent_channels"]
    if quantizer == "msvq":
        assert vae.quantizer.codebook_size == tokenizer_cfg["codebook_size"]
    images = torch.zeros(1, 3, *vae.image_size)
    assert [t.shape[1] for t in vae.tokenize(images)] == list(vae.scales.token_counts)


def test_f16_preset_has_the_released_size(compose_cfg) -> None:
    preset = VQVAE_PRESETS["vqvae_f16"]
    tokenizer = OmegaConf.to_container(compose_cfg("train_tokenizer", ["tokenizer=vqvae_f16"]).tokenizer)
    assert {k: v for k, v in tokenizer.items() if k != "name"} == preset["tokenizer"]
    with torch.device("meta"):
        vae = build_vqvae(**preset)
    assert vae.latent_size() == (16, 16) and vae.scales.total_tokens == 680
    assert vae.quantizer.codebook_size == 4096 and vae.quantizer.code_dim == 32
    # vae_ch160v4096z32.pth holds 108,948,355 parameters (its ema_vocab_hit_SV buffer excluded)
    assert sum(p.numel() for p in vae.parameters()) == 108_948_355


def test_phi_count_zero_takes_num_scales_from_the_schedule() -> None:
    preset = VQVAE_PRESETS["vqvae_tiny"]
    vae = build_vqvae(preset["tokenizer"], {"name": "msvq", "phi_count": 0}, preset["scales"])
    assert isinstance(vae.quantizer, MultiScaleVQ) and len(vae.quantizer.phi.convs) == 4


# -- the official key map ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("official", "varkit"),
    [
        ("encoder.conv_in.weight", "encoder.stem.weight"),
        ("encoder.down.1.block.0.nin_shortcut.bias", "encoder.stages.1.blocks.0.shortcut.bias"),
        ("encoder.down.4.attn.1.proj_out.weight", "encoder.stages.4.attentions.1.proj.weight"),
        ("encoder.down.0.downsample.conv.weight", "encoder.stages.0.resample.conv.weight"),
        ("encoder.mid.attn_1.qkv.bias", "encoder.middle.attention.qkv.bias"),
        ("decoder.mid.block_2.norm1.weight", "decoder.middle.block2.norm1.weight"),
        ("decoder.up.4.attn.2.norm.weight", "decoder.stages.0.attentions.2.norm.weight"),
        ("decoder.up.0.block.2.conv2.weight", "decoder.stages.4.blocks.2.conv2.weight"),
        ("decoder.up.1.upsample.conv.bias", "decoder.stages.3.resample.conv.bias"),
        ("decoder.norm_out.weight", "decoder.head_norm.weight"),
        ("post_quant_conv.weight", "post_quant_conv.weight"),
        ("quantize.embedding.weight", "quantizer.codebook.weight"),
        ("quantize.quant_resi.qresi.weight", "quantizer.phi.convs.0.weight"),
        ("quantize.quant_resi.qresi_ls.3.bias", "quantizer.phi.convs.3.bias"),
        ("quantize.quant_resi.7.weight", "quantizer.phi.convs.7.weight"),
    ],
)
def test_official_key_map(official: str, varkit: str) -> None:
    assert official_key_to_varkit(official, levels=5) == varkit


def test_unknown_official_keys_are_refused() -> None:
    with pytest.raises(CheckpointKeyError, match="no rule"):
        official_key_to_varkit("encoder.conv_in.scale")
    with pytest.raises(CheckpointKeyError, match=r"1 official VQVAE keys match no rule.*decoder\.extra\.weight"):
        convert_official_vqvae_state_dict({"decoder.extra.weight": torch.zeros(1)})
    assert convert_official_vqvae_state_dict({"quantize.ema_vocab_hit_SV": torch.zeros(2, 3)}) == {}


def test_key_rules_are_unambiguous_on_every_varkit_name() -> None:
    # every official name of a released-layout model maps to a distinct varkit parameter
    with torch.device("meta"):
        vae = build_vqvae(**VQVAE_PRESETS["vqvae_f16"])
    produced = {official_key_to_varkit(key) for key in _official_f16_keys()}
    assert produced == set(vae.state_dict())
    assert len(OFFICIAL_VQVAE_KEY_RULES) >= 10


def _official_f16_keys() -> list[str]:
    """The key set of vae_ch160v4096z32.pth (weights and biases), written out from the reference layout."""
    keys = ["encoder.conv_in", "decoder.conv_in", "quant_conv", "post_quant_conv"]
    widths = [160 * m for m in (1, 1, 2, 2, 4)]
    block_parts = ["norm1", "conv1", "norm2", "conv2"]
    attention_parts = ["norm", "qkv", "proj_out"]
    in_width = 160
    for level, width in enumerate(widths):
        for block in range(2):
            keys += [f"encoder.down.{level}.block.{block}.{p}" for p in block_parts]
            if block == 0 and in_width != width:
                keys.append(f"encoder.down.{level}.block.{block}.nin_shortcut")
            if level == 4:
                keys += [f"encoder.down.{level}.attn.{block}.{p}" for p in attention_parts]
            in_width = width
        if level != 4:
            keys.append(f"encoder.down.{level}.downsample.conv")
    in_width = widths[-1]
    for level in reversed(range(5)):
        width = widths[level]
        for block in range(3):
            keys += [f"decoder.up.{level}.block.{block}.{p}" for p in block_parts]
            if block == 0 and in_width != width:
                keys.append(f"decoder.up.{level}.block.{block}.nin_shortcut")
            if level == 4:
                keys += [f"decoder.up.{level}.attn.{block}.{p}" for p in attention_parts]
            in_width = width
        if level != 0:
            keys.append(f"decoder.up.{level}.upsample.conv")
    for side in ("encoder", "decoder"):
        keys += [f"{side}.mid.block_{i}.{p}" for i in (1, 2) for p in block_parts]
        keys += [f"{side}.mid.attn_1.{p}" for p in attention_parts]
        keys += [f"{side}.norm_out", f"{side}.conv_out"]
    keys += [f"quantize.quant_resi.qresi_ls.{i}" for i in range(4)]
    full = [f"{k}.{p}" for k in keys for p in ("weight", "bias")]
    return [*full, "quantize.embedding.weight"]
