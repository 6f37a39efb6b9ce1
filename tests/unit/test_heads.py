"""Bit-wise head and per-scale vocabularies of the VAR transformer (issue 17), against direct computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from varkit import Scales
from varkit.models.factory import tokenizer_facts
from varkit.models.sampling import sample_bits
from varkit.models.var import VAR
from varkit.nn.heads import bitwise_loss, bitwise_predictions, indices_to_bits, vocabulary_cross_entropy
from varkit.quantizers import MultiScaleBSQ, MultiScaleSimVQ

SIZES = [1, 2, 3]


def tiny_var(**kwargs: object) -> VAR:
    torch.manual_seed(0)
    args = {"num_classes": 3, "depth": 2, "width": 32, "num_heads": 2, "code_dim": 4, "scales": SIZES}
    return VAR(**{**args, **kwargs})  # type: ignore[arg-type]


def test_bitwise_loss_is_the_sum_of_per_bit_bce() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    targets = torch.randint(0, 2**7, (2, 5))
    direct = torch.zeros(2, 5)
    for i in range(7):
        bit = ((targets >> i) & 1).float()
        p = torch.sigmoid(logits[..., i])
        direct -= bit * p.log() + (1 - bit) * (1 - p).log()
    torch.testing.assert_close(bitwise_loss(logits, targets), direct, rtol=1e-5, atol=1e-5)
    assert torch.equal(bitwise_predictions(torch.where(indices_to_bits(targets, 7) > 0, 1.0, -1.0)), targets)


class _LargestTensor(TorchDispatchMode):
    """Records the largest dimension of every tensor any op produces."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(value, torch.Tensor) and value.ndim:
                self.largest = max(self.largest, max(value.shape))
        return out


def test_bitwise_model_with_32_bits_never_builds_a_vocabulary_wide_tensor() -> None:
    bits = 32
    quantizer = MultiScaleBSQ(bits=bits, code_dim=4).eval()
    model = tiny_var(codebook_size=2**bits, bits=bits)
    scales = Scales.of(SIZES)
    indices = quantizer.encode(torch.randn(2, 4, 3, 3), scales)
    targets = torch.cat(indices, dim=1)
    assert int(targets.max()) >= 2**16  # ids really use the high bits
    with _LargestTensor() as spy:
        logits = model(torch.tensor([0, 1]), quantizer.teacher_forcing_inputs(indices, scales))
        loss = model.token_loss(logits, targets).mean()
        loss.backward()
        out = model.generate(torch.tensor([0, 2]), quantizer, cfg=2.0, top_k=0, top_p=0.9,
                             generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert logits.shape == (2, 14, bits) and torch.isfinite(loss)
    assert spy.largest < 1024, spy.largest  # nothing near 2^32 (not even 2^10) wide
    assert [t.shape for t in out.tokens] == [(2, 1), (2, 4), (2, 9)]
    with pytest.raises(ValueError, match="smooth"):
        model.generate(torch.tensor([0]), quantizer, smooth=True)


def test_sample_bits_filters() -> None:
    logits = torch.tensor([[[3.0, -3.0, 0.2, -0.1]]]).expand(1, 4000, 4)
    greedy = bitwise_predictions(logits)
    assert torch.equal(sample_bits(logits, top_k=1), greedy)
    assert torch.equal(sample_bits(logits, temperature=0), greedy)
    draws = indices_to_bits(sample_bits(logits, generator=torch.Generator().manual_seed(0)), 4).mean(1)[0]
    torch.testing.assert_close(draws, torch.sigmoid(logits[0, 0]), atol=0.03, rtol=0)
    # top_p = 0.9: bits whose likelier value has p >= 0.9 (the first two, sigmoid(3) = 0.95) are set greedily
    nucleus = indices_to_bits(sample_bits(logits, top_p=0.9, generator=torch.Generator().manual_seed(0)), 4)
    assert torch.equal(nucleus[0, :, 0], torch.ones(4000)) and torch.equal(nucleus[0, :, 1], torch.zeros(4000))
    assert 0.3 < float(nucleus[0, :, 2].mean()) < 0.7


def test_per_scale_vocabularies_mask_logits_and_sampling() -> None:
    model = tiny_var(codebook_size=16, codebook_sizes=[2, 4, 16])
    quantizer = MultiScaleSimVQ(codebook_size=16, code_dim=4, codebook_sizes=[2, 4, 16]).eval()
    logits = model(torch.tensor([0, 1]), torch.zeros(2, 13, 4))
    assert torch.isinf(logits[:, 0, 2:]).all() and torch.isfinite(logits[:, 0, :2]).all()
    assert torch.isinf(logits[:, 1:5, 4:]).all() and torch.isfinite(logits[:, 5:]).all()
    out = model.generate(torch.arange(3).repeat(10), quantizer, cfg=1.5, generator=torch.Generator().manual_seed(0))
    assert [int(t.max()) < v for t, v in zip(out.tokens, [2, 4, 16])] == [True] * 3
    assert model.config["codebook_sizes"] == [2, 4, 16] and "codebook_sizes" not in tiny_var().config


def test_vocabulary_cross_entropy_smooths_over_each_positions_own_vocabulary() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8)
    masked = logits.clone()
    masked[:, 0, 3:] = float("-inf")
    targets = torch.tensor([[1, 5, 7], [2, 0, 4]])
    eps = 0.1
    got = vocabulary_cross_entropy(masked, targets, eps)
    assert torch.isfinite(got).all()
    # position 0 has 3 codes: plain label-smoothed CE over those 3 logits
    direct0 = F.cross_entropy(logits[:, 0, :3], targets[:, 0], label_smoothing=eps, reduction="none")
    torch.testing.assert_close(got[:, 0], direct0)
    direct = F.cross_entropy(logits[:, 1:].transpose(1, 2), targets[:, 1:], label_smoothing=eps, reduction="none")
    torch.testing.assert_close(got[:, 1:], direct)


def test_tokenizer_facts_select_the_head() -> None:
    class Tok(torch.nn.Module):
        def __init__(self, quantizer: torch.nn.Module) -> None:
            super().__init__()
            self.quantizer, self.scales = quantizer, Scales.of(SIZES)

    bsq = tokenizer_facts(Tok(MultiScaleBSQ(bits=5, code_dim=4)))
    assert bsq["bits"] == 5 and bsq["codebook_size"] == 32 and bsq["codebook_sizes"] is None
    simvq = tokenizer_facts(Tok(MultiScaleSimVQ(codebook_size=16, code_dim=4, codebook_sizes=[2, 4, 16])))
    assert simvq["bits"] is None and simvq["codebook_sizes"] == [2, 4, 16]
    assert math.log2(bsq["codebook_size"]) == 5
