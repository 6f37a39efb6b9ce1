"""The sampling spec (varkit.sampling.SamplingConfig): validation, conventions, configs and old keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from varkit.errors import ConfigError
from varkit.models.var import sample_images
from varkit.sampling import SamplingConfig
from varkit.testing.speedup import _quantizer, tiny_var

CONF = Path(__file__).resolve().parents[2] / "conf" / "sampling"


def test_defaults_are_the_exact_sampler_of_varkit_sample() -> None:
    spec = SamplingConfig()
    assert (spec.cfg, spec.cfg_schedule, spec.top_k, spec.top_p, spec.speedups) == (1.5, "linear", 0, 0.0, ())
    assert spec.generate_kwargs()["speedups"] == []
    assert spec.describe().endswith("(exact)")


def test_from_config_accepts_dicts_omegaconf_nodes_and_names() -> None:
    node = OmegaConf.create({"cfg": 2.0, "top_k": 900, "top_p": 0.96, "speedups": [{"name": "guidance_cutoff"}]})
    spec = SamplingConfig.from_config(node)
    assert spec.top_k == 900 and spec.speedups == ({"name": "guidance_cutoff"},)
    assert SamplingConfig.from_config({"speedups": ["early_stop"]}).speedups == ({"name": "early_stop"},)
    assert SamplingConfig.from_config(None) == SamplingConfig()
    assert spec.replace(top_k=1).top_k == 1 and spec.top_k == 900  # frozen: replace copies


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"top_k": -1}, ["top_k", "-1", ">= 0"]),
        ({"top_p": 1.5}, ["top_p", "1.5", "[0, 1]"]),
        ({"temperature": 0.0}, ["temperature", "0.0", "> 0"]),
        ({"cfg": -1.0}, ["cfg", "-1.0", ">= 0"]),
        ({"cfg": 0.5, "cfg_convention": "llamagen"}, ["cfg", "0.5", ">= 1"]),
        ({"cfg_convention": "dit"}, ["cfg_convention", "dit", "var, llamagen"]),
        ({"cfg_schedule": "ramp"}, ["cfg_schedule", "ramp", "linear"]),
        ({"speedups": [{"name": "warp_drive"}]}, ["speedups", "warp_drive", "token_pruning"]),
        ({"speedups": [{"name": "token_pruning", "ratio": 2.0}]}, ["token_pruning", "ratio"]),
        ({"speedups": [{"name": "kv_budget", "size": 3}]}, ["kv_budget", "size", "budget"]),
        ({"topk": 5}, ["topk", "top_k"]),
    ],
)
def test_bad_values_are_one_config_error_naming_key_value_and_allowed(values: dict, words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        SamplingConfig.from_config(values)
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


def test_llamagen_convention_reads_cfg_as_s_equals_t_plus_one() -> None:
    model, quantizer = tiny_var(0), _quantizer("msvq")
    labels = torch.tensor([1, 2])
    var_style = SamplingConfig(cfg=1.5, top_k=1).generate_kwargs()
    llamagen = SamplingConfig(cfg=2.5, cfg_convention="llamagen", top_k=1).generate_kwargs()
    assert llamagen["cfg"] == pytest.approx(1.5)
    a = model.generate(labels, quantizer, **var_style)
    b = model.generate(labels, quantizer, **llamagen)
    assert all(torch.equal(x, y) for x, y in zip(a.tokens, b.tokens))
    unguided = SamplingConfig(cfg=1.0, cfg_convention="llamagen").generate_kwargs()
    assert unguided["cfg"] == 0.0


def test_sample_images_takes_the_spec_or_the_old_keywords() -> None:
    class Decoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.quantizer = _quantizer("msvq")

        def decode_latents(self, latent: torch.Tensor) -> torch.Tensor:
            return latent[:, :3].tanh()

    model, vqvae = tiny_var(0), Decoder()
    labels = torch.tensor([3, 5])
    spec = SamplingConfig(cfg=2.0, top_k=8, top_p=0.9)
    a = sample_images(model, vqvae, labels, sampling=spec, generator=torch.Generator().manual_seed(0))
    b = sample_images(model, vqvae, labels, cfg=2.0, top_k=8, top_p=0.9, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    with pytest.raises(TypeError, match="either"):
        sample_images(model, vqvae, labels, sampling=spec, top_k=3)


_NEEDS_REFINER = ("draft_refine", "fast_draft")


@pytest.mark.parametrize("option", sorted(p.stem for p in CONF.glob("*.yaml") if p.stem not in _NEEDS_REFINER))
def test_every_sampling_option_composes_into_a_valid_spec(compose_cfg, option: str) -> None:
    cfg = compose_cfg("sample", [f"sampling={option}"])
    spec = SamplingConfig.from_config(cfg.sampling)
    assert len(spec.built_speedups) == len(spec.speedups)
    if option == "var_paper":
        assert (spec.cfg, spec.top_k, spec.top_p, spec.temperature, spec.smooth) == (1.5, 900, 0.96, 1.0, False)


def test_speedups_switch_on_by_override_and_old_keys_are_rewritten(compose_cfg) -> None:
    from varkit.cli.sample import sampling_config

    cfg = compose_cfg(
        "sample",
        ["sampling.speedups=[{name: token_pruning, ratio: 0.25}]", "cfg=3.0", "top_k=900", "cfg_schedule=constant"],
    )
    spec = sampling_config(cfg)
    assert spec.speedups == ({"name": "token_pruning", "ratio": 0.25},)
    assert (spec.cfg, spec.top_k, spec.cfg_schedule) == (3.0, 900, {"name": "constant"})
    assert spec.built_speedups[0].ratio == 0.25


@pytest.mark.parametrize("option", _NEEDS_REFINER)
def test_draft_refine_options_require_their_model(compose_cfg, option: str) -> None:
    cfg = compose_cfg("sample", [f"sampling={option}"])
    assert OmegaConf.is_missing(cfg.sampling.speedups[0], "model")


def test_fast_draft_is_fast_plus_a_refiner_for_the_two_finest_scales(compose_cfg) -> None:
    """`sampling=fast_draft` = `fast`'s speed-ups with draft_refine in front; with a refiner it samples."""
    fast = compose_cfg("sample", ["sampling=fast"]).sampling
    cfg = compose_cfg("sample", ["sampling=fast_draft"]).sampling
    speedups = OmegaConf.to_container(cfg.speedups, resolve=True)
    assert speedups[0]["name"] == "draft_refine" and speedups[0]["switch_scale"] == -2
    assert speedups[1:] == OmegaConf.to_container(fast.speedups)
    drafter, refiner = tiny_var(0), tiny_var(1, depth=1)
    speedups[0]["model"] = refiner
    options = OmegaConf.to_container(cfg, resolve=True)
    spec = SamplingConfig.from_config({**options, "speedups": speedups})
    plain = SamplingConfig.from_config({**options, "speedups": []})
    labels, quantizer = torch.tensor([1, 2]), _quantizer("msvq")
    out = drafter.generate(labels, quantizer, generator=torch.Generator().manual_seed(0), **spec.generate_kwargs())
    exact = drafter.generate(labels, quantizer, generator=torch.Generator().manual_seed(0), **plain.generate_kwargs())
    assert [t.shape for t in out.tokens] == [t.shape for t in exact.tokens]
    for a, b in zip(out.tokens[:-2], exact.tokens[:-2]):  # the drafter's coarse scales are the exact sampler's
        assert torch.equal(a, b)
