"""VAR transformer invariants on a tiny model (VAR paper, Sec. 3.2): causality, KV cache, guidance, randomness."""

from __future__ import annotations

import math

import pytest
import torch

from varkit.checkpoint.var import (
    CheckpointKeyError,
    infer_official_var_config,
    official_key_map,
    var_from_official,
)
from varkit.contracts import Scales
from varkit.models.var import VAR
from varkit.models.var_presets import VAR_PRESETS, var_preset
from varkit.nn.attention import KVCache
from varkit.quantizers.msvq import MultiScaleVQ

SCALES = [1, 2, 3, 4]


def _randomize(model: torch.nn.Module, seed: int = 0, std: float = 0.3) -> torch.nn.Module:
    """Replace the near-identity initialisation by large random weights so every path matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


def _tiny(seed: int = 0, **overrides: object) -> VAR:
    torch.manual_seed(seed)
    args = {**var_preset("var_tiny"), "class_dropout": 0.0, **overrides}
    return _randomize(VAR(**args), seed).eval()  # type: ignore[return-value]


def _quantizer(seed: int = 0) -> MultiScaleVQ:
    torch.manual_seed(seed)
    q = MultiScaleVQ(codebook_size=64, code_dim=8, phi_count=4)
    with torch.no_grad():
        q.codebook.weight.normal_()
    return q.eval()


def _inputs(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    total = Scales.of(SCALES).total_tokens
    return torch.randint(0, 10, (batch,), generator=gen), torch.randn(batch, total - 1, 8, generator=gen)


@pytest.mark.parametrize("shared_adaln", [False, True])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_block_causality(shared_adaln: bool, attention: str) -> None:
    model = _tiny(shared_adaln=shared_adaln, attention=attention)
    scales = model.scales
    labels, inputs = _inputs(2)
    with torch.no_grad():
        base = model(labels, inputs)
        for k in range(1, len(scales)):
            changed = inputs.clone()
            # inputs are scales 2..K: scale k starts at offsets[k] - first_tokens
            sl = slice(scales.offsets[k] - 1, scales.offsets[k + 1] - 1)
            changed[:, sl] += torch.randn_like(changed[:, sl])
            out = model(labels, changed)
            assert torch.equal(out[:, : scales.offsets[k]], base[:, : scales.offsets[k]]), f"scale {k} leaked"
            assert not torch.allclose(out[:, scales.slice(k)], base[:, scales.slice(k)])


def test_sdpa_matches_eager_kernel() -> None:
    labels, inputs = _inputs(3)
    with torch.no_grad():
        a = _tiny(attention="sdpa")(labels, inputs)
        b = _tiny(attention="eager")(labels, inputs)
    assert torch.allclose(a, b, atol=1e-5)


def _teacher_forced_argmax(
    model: VAR, quantizer: MultiScaleVQ, labels: torch.Tensor, tokens: list[torch.Tensor], weights: list[float]
) -> list[torch.Tensor]:
    inputs = quantizer.teacher_forcing_inputs(tokens, model.scales)
    with torch.no_grad():
        cond = model(labels, inputs)
        uncond = model(torch.full_like(labels, model.num_classes), inputs)
    out = []
    for k, w in enumerate(weights):
        sl = model.scales.slice(k)
        out.append(((1 + w) * cond[:, sl] - w * uncond[:, sl]).argmax(-1))
    return out


@pytest.mark.parametrize("schedule", ["none", "linear"])
def test_kv_cached_greedy_equals_teacher_forced_argmax(schedule: str) -> None:
    model, quantizer = _tiny(), _quantizer()
    labels = torch.tensor([0, 3, 7])
    result = model.generate(labels, quantizer, cfg=2.0, cfg_schedule=schedule, top_k=1)
    num = len(model.scales)
    weights = [2.0 * k / (num - 1) if schedule == "linear" else 0.0 for k in range(num)]
    expected = _teacher_forced_argmax(model, quantizer, labels, result.tokens, weights)
    for k, (got, want) in enumerate(zip(result.tokens, expected)):
        assert torch.equal(got, want), f"scale {k}"
    assert torch.allclose(result.latent, quantizer.decode(result.tokens, model.scales), atol=1e-5)


def test_guidance_zero_equals_conditional_sampling() -> None:
    model, quantizer = _tiny(), _quantizer()
    labels = torch.tensor([1, 2])
    plain = model.generate(labels, quantizer, cfg_schedule="none", top_k=8, generator=torch.Generator().manual_seed(0))
    zero = model.generate(labels, quantizer, cfg=0.0, top_k=8, generator=torch.Generator().manual_seed(0))
    for a, b in zip(plain.tokens, zero.tokens):
        assert torch.equal(a, b)
    # the guided path (cond + uncond batch) gives the first scale (weight 0 under the linear ramp) the same draw
    guided = model.generate(labels, quantizer, cfg=4.0, top_k=8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(guided.tokens[0], plain.tokens[0])


def test_same_seed_same_output_and_no_state_kept() -> None:
    model, quantizer = _tiny(), _quantizer()
    labels = torch.tensor([4, 5, 6])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    runs = [
        model.generate(labels, quantizer, cfg=1.5, top_p=0.9, generator=torch.Generator().manual_seed(s))
        for s in (11, 11, 12)
    ]
    assert all(torch.equal(a, b) for a, b in zip(runs[0].tokens, runs[1].tokens))
    assert torch.equal(runs[0].latent, runs[1].latent)
    assert not all(torch.equal(a, b) for a, b in zip(runs[0].tokens, runs[2].tokens))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


@pytest.mark.parametrize("batch", [1, 5])
def test_generate_shapes_smooth_and_bf16(batch: int) -> None:
    model, quantizer = _tiny(), _quantizer()
    labels = torch.arange(batch) % 10
    out = model.generate(labels, quantizer, smooth=True, top_k=10, generator=torch.Generator().manual_seed(0))
    assert [tuple(t.shape) for t in out.tokens] == [(batch, n) for n in model.scales.token_counts]
    assert all(int(t.max()) < 64 and int(t.min()) >= 0 for t in out.tokens)
    assert out.latent.shape == (batch, 8, 4, 4) and torch.isfinite(out.latent).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model.generate(labels, quantizer, cfg=1.0, top_k=1)
    assert mixed.latent.dtype == torch.float32 and torch.isfinite(mixed.latent).all()
    fast = model.to(torch.bfloat16).generate(labels, quantizer, cfg=1.0, top_k=1)
    assert fast.latent.dtype == torch.float32 and torch.isfinite(fast.latent).all()


def test_class_dropout() -> None:
    model = _tiny(class_dropout=0.5)
    labels = torch.arange(1000) % 10
    dropped = model.drop_labels(labels, generator=torch.Generator().manual_seed(0))
    is_null = dropped == model.num_classes
    assert 0.4 < is_null.float().mean() < 0.6
    assert torch.equal(dropped[~is_null], labels[~is_null])
    # in training, forward drops labels; in eval it does not
    always = _tiny(class_dropout=0.999999)
    labels, inputs = _inputs(2)
    with torch.no_grad():
        eval_null = always(torch.full_like(labels, 10), inputs)
        eval_cond = always(labels, inputs)
        always.train()
        train = always(labels, inputs, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(train, eval_null, atol=1e-6)
    assert not torch.allclose(train, eval_cond)


def test_kv_cache_is_preallocated() -> None:
    cache = KVCache(2, 3, 10, 4, dtype=torch.float32, device="cpu")
    keys_ptr = cache.keys.data_ptr()
    k, v = cache.append(torch.ones(2, 3, 4, 4), torch.ones(2, 3, 4, 4))
    assert k.shape[2] == 4 and torch.equal(v, torch.ones(2, 3, 4, 4))
    k2, _ = cache.append(torch.full((2, 3, 6, 4), 2.0), torch.zeros(2, 3, 6, 4))
    assert k2.shape == (2, 3, 10, 4) and k2.data_ptr() == keys_ptr
    assert torch.equal(k2[:, :, :4], torch.ones(2, 3, 4, 4))
    with pytest.raises(ValueError, match="overflow"):
        cache.append(torch.ones(2, 3, 1, 4), torch.ones(2, 3, 1, 4))


def test_init_weights_follow_the_reference_scheme() -> None:
    torch.manual_seed(0)
    model = VAR(**var_preset("var_demo"))
    width = model.width
    assert model.head.weight.std() < 0.02 * math.sqrt(1 / width / 3) * 1.5
    gates = model.blocks[0].adaln.linear.weight[: 2 * width]
    assert gates.abs().max() < 1e-5
    assert float(model.blocks[0].attention.log_scale.detach().exp().mean()) == pytest.approx(4.0)
    assert torch.equal(model.blocks[-1].attention.q_bias, torch.zeros(width))
    assert model.blocks[-1].drop_path.p == pytest.approx(0.025)


def test_presets_follow_the_official_shape_rule() -> None:
    for depth in (16, 20, 24, 30, 36):
        p = VAR_PRESETS[f"var_d{depth}"]
        assert (p["width"], p["num_heads"], p["qk_l2_norm"]) == (64 * depth, depth, True)
        assert p["drop_path"] == pytest.approx(0.1 * depth / 24)
        assert p["shared_adaln"] == (depth == 36)
    with pytest.raises(KeyError, match="var_d16"):
        var_preset("var_d17")
    with pytest.raises(TypeError, match="unknown VAR argument"):
        var_preset("var_tiny", heads=3)
    model = VAR.from_config({"name": "var_tiny", **var_preset("var_tiny")})
    assert VAR.from_config(model.config).config == model.config


def _to_official(model: VAR) -> dict[str, torch.Tensor]:
    """Invert the key map to produce an official-format state dict (with the derived buffers)."""
    mapping = official_key_map(model.depth, shared_adaln=model.shared_adaln is not None, qk_l2_norm=True)
    ours = model.state_dict()
    out = {src: ours[dst].clone() for src, dst in mapping.items()}
    out["lvl_1L"] = model.scales.level_ids()[None]
    allowed = model.mask.dense()
    out["attn_bias_for_masking"] = torch.zeros(allowed.shape).masked_fill(~allowed, -math.inf)[None, None]
    for i in range(model.depth):
        out[f"blocks.{i}.attn.zero_k_bias"] = torch.zeros(model.width)
    return out


@pytest.mark.parametrize("shared_adaln", [False, True])
def test_official_key_map_round_trip(shared_adaln: bool) -> None:
    model = _tiny(shared_adaln=shared_adaln, depth=3)
    official = _to_official(model)
    config = infer_official_var_config(official)
    assert config["shared_aln"] == shared_adaln and config["patch_nums"] == SCALES and config["depth"] == 3
    back = var_from_official(official, config, class_dropout=0.0)
    labels, inputs = _inputs(2)
    with torch.no_grad():
        assert torch.equal(back(labels, inputs), model(labels, inputs))
    # every key accounted for: an extra or a missing key is a clear error
    with pytest.raises(CheckpointKeyError, match="unexpected"):
        var_from_official({**official, "blocks.0.attn.extra": torch.zeros(1)}, config)
    missing = dict(official)
    del missing["blocks.2.ffn.fc1.bias"]
    with pytest.raises(CheckpointKeyError, match=r"blocks\.2\.ffn\.fc1\.bias"):
        var_from_official(missing, config)
    bad = dict(official)
    bad["blocks.1.attn.zero_k_bias"] = torch.ones(model.width)
    with pytest.raises(ValueError, match="zero_k_bias"):
        var_from_official(bad, config)
    with pytest.raises(ValueError, match="lvl_1L"):
        var_from_official(official, {**config, "patch_nums": [1, 2, 4]})


def test_conf_model_options_match_presets(compose_cfg) -> None:
    # the model=<name> options are generated from the presets (varkit.models.presets); compose what users get
    from omegaconf import OmegaConf

    options = {name: compose_cfg("train_var", [f"model={name}"]).model for name in VAR_PRESETS}
    for name, preset in VAR_PRESETS.items():
        node = OmegaConf.to_container(options[name], resolve=True)
        assert isinstance(node, dict) and node.pop("name") == name
        scales = node.pop("scales")
        expected = dict(preset)
        expected_scales = expected.pop("scales")
        assert scales == (
            {"name": expected_scales}
            if isinstance(expected_scales, str)
            else {"name": "explicit", "sizes": list(expected_scales)}
        )
        for key, value in expected.items():
            assert node[key] == pytest.approx(value), (name, key)
    tiny = OmegaConf.to_container(options["var_tiny"], resolve=True)
    assert VAR.from_config(tiny).scales == Scales.of(SCALES)  # type: ignore[arg-type]


def test_plain_dot_product_attention_variant_is_consistent() -> None:
    model, quantizer = _tiny(qk_l2_norm=False, depth=3), _quantizer()
    assert all(not hasattr(block.attention, "log_scale") for block in model.blocks)
    labels = torch.tensor([2, 9])
    result = model.generate(labels, quantizer, cfg=1.0, top_k=1)
    weights = [1.0 * k / (len(SCALES) - 1) for k in range(len(SCALES))]
    expected = _teacher_forced_argmax(model, quantizer, labels, result.tokens, weights)
    assert all(torch.equal(a, b) for a, b in zip(result.tokens, expected))
