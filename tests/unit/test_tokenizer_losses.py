"""Tokenizer-stage pieces: losses, adaptive GAN weight, patch discriminator, LPIPS network, codebook health."""

from __future__ import annotations

import itertools
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from varkit.contracts import Scales
from varkit.nn.discriminator import PatchDiscriminator
from varkit.nn.perceptual import VGG16_LAYOUT, LPIPSLoss, build_perceptual_loss
from varkit.quantizers.codebook import CodeUsage, reset_optimizer_rows, restart_dead_codes, scale_residuals
from varkit.training.losses import (
    adaptive_gan_weight,
    hinge_discriminator_loss,
    hinge_generator_loss,
    reconstruction_loss,
)
from varkit.training.optim import WarmupCosine


def test_reconstruction_loss_matches_numpy() -> None:
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 3, 4, 4, generator=generator), torch.randn(2, 3, 4, 4, generator=generator)
    diff = a.numpy() - b.numpy()
    expected = 0.7 * np.abs(diff).mean() + 0.3 * (diff**2).mean()
    assert reconstruction_loss(a, b, 0.7, 0.3).item() == pytest.approx(expected, rel=1e-6)
    assert reconstruction_loss(a, b, 1.0, 0.0).item() == pytest.approx(np.abs(diff).mean(), rel=1e-6)
    with pytest.raises(ValueError):
        reconstruction_loss(a, b, 0.0, 0.0)


def test_hinge_losses() -> None:
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-3.0, 0.0, 1.5])
    expected = 0.5 * (np.mean([0.0, 0.5, 2.0]) + np.mean([0.0, 1.0, 2.5]))
    assert hinge_discriminator_loss(real, fake).item() == pytest.approx(expected)
    assert hinge_generator_loss(fake).item() == pytest.approx(-np.mean([-3.0, 0.0, 1.5]))


def test_adaptive_gan_weight_is_gradient_norm_ratio() -> None:
    layer = nn.Linear(4, 3)
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    out = layer(x)
    rec = out.square().mean()
    gan = -(out * 3.0).mean()
    weight = adaptive_gan_weight(rec, gan, layer.weight, eps=0.0)
    rec_grad = torch.autograd.grad(out.square().mean(), layer.weight, retain_graph=True)[0]
    gan_grad = torch.autograd.grad(-(out * 3.0).mean(), layer.weight, retain_graph=True)[0]
    assert weight.item() == pytest.approx((rec_grad.norm() / gan_grad.norm()).item(), rel=1e-5)
    assert not weight.requires_grad
    (rec + weight * gan).backward()  # graphs were retained for the caller's backward
    assert adaptive_gan_weight(layer(x).sum(), layer(x).sum() * 1e-9, layer.weight, max_weight=10.0).item() == 10.0


def test_patch_discriminator_shapes_and_gradients() -> None:
    disc = PatchDiscriminator(base_channels=16, num_layers=3)
    images = torch.randn(2, 3, 64, 64, requires_grad=True)
    logits = disc(images)
    assert logits.shape == (2, 1, 6, 6)
    logits.mean().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="norm"):
        PatchDiscriminator(norm="layer")


def _torchvision_vgg16_features() -> nn.Sequential:
    """torchvision's ``vgg16().features`` layout, rebuilt independently as a reference."""
    layers: list[nn.Module] = []
    channels = 3
    for width in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if width == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, int(width), 3, padding=1), nn.ReLU(inplace=False)]
            channels = int(width)
    return nn.Sequential(*layers)


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Sequential]:
    torch.manual_seed(0)
    features = _torchvision_vgg16_features()
    for module in features:
        if isinstance(module, nn.Conv2d):  # scale so activations neither vanish nor explode through 13 layers
            nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / (9 * module.in_channels)))
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # ignored
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    torch.save(state, path)
    return path, features


def test_vgg_features_match_torchvision_layout(vgg_file: tuple[Path, nn.Sequential]) -> None:
    path, reference = vgg_file
    assert len([e for e in VGG16_LAYOUT if not isinstance(e, int)]) == 13
    loss = LPIPSLoss.from_files(path)
    images = torch.randn(2, 3, 16, 16)
    taps = loss.features(images)
    expected, hidden = [], images
    for index, module in enumerate(reference[:30]):  # up to relu5_3 (the last pool is not used)
        hidden = module(hidden)
        if index in (3, 8, 15, 22, 29):  # relu1_2 ... relu5_3
            expected.append(hidden)
    assert len(taps) == 5
    for got, want in zip(taps, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert not list(loss.state_dict())  # frozen constants: never in optimisers or checkpoints
    assert not list(loss.parameters())


def test_lpips_distance_properties(vgg_file: tuple[Path, nn.Sequential], tmp_path: Path) -> None:
    path, _ = vgg_file
    loss = LPIPSLoss.from_files(path)
    generator = torch.Generator().manual_seed(2)
    target = torch.rand(2, 3, 16, 16, generator=generator) * 2 - 1
    assert torch.allclose(loss(target, target), torch.zeros(2), atol=1e-6)
    reconstruction = (target + 0.3 * torch.randn(2, 3, 16, 16, generator=generator)).requires_grad_(True)
    distance = loss(reconstruction, target)
    assert distance.shape == (2,) and bool((distance > 0).all())
    distance.sum().backward()
    assert reconstruction.grad is not None and reconstruction.grad.abs().sum() > 0
    # LPIPS linear layers (lpips package key layout) weight the channels: doubling them doubles the distance
    from safetensors.torch import save_file

    channels = (64, 128, 256, 512, 512)
    lin = {f"lin{i}.model.1.weight": torch.full((1, c, 1, 1), 2.0 / c) for i, c in enumerate(channels)}
    save_file(lin, str(tmp_path / "lpips.safetensors"))
    weighted = LPIPSLoss.from_files(path, tmp_path / "lpips.safetensors")
    assert weighted.uses_lpips_weights
    torch.testing.assert_close(weighted(reconstruction.detach(), target), 2 * distance.detach(), rtol=1e-5, atol=1e-7)


def test_lpips_refuses_wrong_layout(tmp_path: Path) -> None:
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3), "features.0.bias": torch.zeros(64)}, tmp_path / "x.pt")
    with pytest.raises(KeyError, match=r"features\.2"):
        LPIPSLoss.from_files(tmp_path / "x.pt")
    with pytest.raises(FileNotFoundError):
        LPIPSLoss.from_files(tmp_path / "missing.pth")


def test_perceptual_off_without_file_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="varkit.nn.perceptual"):
        assert build_perceptual_loss(None) is None
    messages = [r.getMessage() for r in caplog.records if r.name == "varkit.nn.perceptual"]
    assert len(messages) == 1 and "perceptual loss is off" in messages[0]


def test_code_usage_matches_numpy() -> None:
    usage = CodeUsage(num_scales=2, codebook_size=5)
    first = torch.tensor([[4, 0, 0, 1, 0], [1, 1, 0, 1, 0]])
    second = torch.tensor([[0, 0, 0, 3, 0], [0, 0, 0, 0, 2]])
    usage.update(first)
    usage.update(second)
    counts = (first + second).numpy().astype(float)
    assert usage.usage().tolist() == pytest.approx(list((counts > 0).mean(axis=1)))
    probs = counts / counts.sum(axis=1, keepdims=True)
    entropy = -np.sum(np.where(probs > 0, probs * np.log(np.where(probs > 0, probs, 1)), 0), axis=1)
    assert usage.perplexity().tolist() == pytest.approx(list(np.exp(entropy)))
    assert usage.dead_codes(threshold=1).tolist() == [False, False, True, False, False]
    assert usage.dead_codes(threshold=3).tolist() == [False, True, True, False, True]
    restored = CodeUsage(2, 5)
    restored.load_state_dict(usage.state_dict())
    assert torch.equal(restored.counts, usage.counts) and restored.steps == 2
    usage.reset()
    assert usage.counts.sum() == 0 and usage.steps == 0


def test_scale_residuals_are_what_each_scale_quantizes() -> None:
    from varkit.quantizers import MultiScaleVQ

    quantizer = MultiScaleVQ(codebook_size=16, code_dim=4, phi_count=1)
    scales = Scales.of([1, 2, 4])
    latents = torch.randn(3, 4, 4, 4, generator=torch.Generator().manual_seed(3))
    residuals = scale_residuals(quantizer, latents, scales)
    assert [tuple(r.shape) for r in residuals] == [(3, 4), (12, 4), (48, 4)]
    # scale 1 quantizes the mean of the latent; the nearest codes of the residuals are exactly encode()'s indices
    torch.testing.assert_close(residuals[0], latents.mean(dim=(2, 3)))
    indices = quantizer.encode(latents, scales)
    for residual, idx in zip(residuals, indices):
        assert torch.equal(quantizer.nearest_codes(residual), idx.flatten())


def test_restart_dead_codes_draws_from_candidates_and_resets_moments() -> None:
    codebook = nn.Embedding(6, 3)
    before = codebook.weight.detach().clone()
    optimizer = torch.optim.AdamW(codebook.parameters(), lr=0.1)
    codebook.weight.sum().backward()
    optimizer.step()
    after_step = codebook.weight.detach().clone()
    dead = torch.tensor([False, True, False, False, True, True])
    candidates = [torch.full((1, 3), 7.0), torch.arange(12.0).view(4, 3)]
    rows = restart_dead_codes(codebook, dead, candidates, torch.Generator().manual_seed(0))
    assert rows.tolist() == [1, 4, 5]
    pool = torch.cat(candidates)
    for row in rows.tolist():
        assert any(torch.equal(codebook.weight[row].detach(), c) for c in pool)
    alive = ~dead
    assert torch.equal(codebook.weight[alive].detach(), after_step[alive])
    assert not torch.equal(after_step, before)
    reset_optimizer_rows(optimizer, codebook.weight, rows)
    state = optimizer.state[codebook.weight]
    assert state["exp_avg"][rows].abs().sum() == 0 and state["exp_avg_sq"][rows].abs().sum() == 0
    assert state["exp_avg"][alive].abs().sum() > 0
    nothing = restart_dead_codes(codebook, torch.zeros(6, dtype=torch.bool), candidates, torch.Generator())
    assert nothing.numel() == 0


def test_warmup_cosine_schedule() -> None:
    schedule = WarmupCosine(warmup_steps=4, total_steps=20, min_ratio=0.1)
    values = [schedule(s) for s in range(25)]
    assert values[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert values[4] == pytest.approx(1.0) and values[20] == pytest.approx(0.1) and values[24] == pytest.approx(0.1)
    assert values[12] == pytest.approx(0.1 + 0.9 * 0.5)
    assert all(a >= b for a, b in itertools.pairwise(values[4:]))
