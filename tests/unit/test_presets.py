"""The front door: presets defined once, built by name, and the same definitions behind the Hydra options."""

from __future__ import annotations

import pytest
import torch

import varkit
from varkit.contracts import Scales
from varkit.models.presets import model_config, preset_configs, tokenizer_config
from varkit.models.var_presets import VAR_PRESETS
from varkit.models.vqvae import VQVAE_PRESETS
from varkit.registry import ATTENTION_KERNELS, MODELS, SCALE_SCHEDULES, TOKENIZERS, UnknownComponentError


def test_every_preset_is_registered_once() -> None:
    assert MODELS.names() == sorted(VAR_PRESETS)
    assert TOKENIZERS.names() == sorted(VQVAE_PRESETS)


def test_create_model_applies_overrides_to_the_preset() -> None:
    model = varkit.create_model("var_tiny", depth=1, num_classes=3)
    shape = VAR_PRESETS["var_tiny"]
    assert (model.depth, model.num_classes, model.width) == (1, 3, shape["width"])
    assert len(model.blocks) == 1 and model.scales == Scales.of(shape["scales"])


def test_create_tokenizer_can_swap_quantizer_and_scales() -> None:
    vae = varkit.create_tokenizer("vqvae_tiny", quantizer={"name": "msvq", "phi_count": 1}, scales=[1, 2, 4])
    assert vae.scales == Scales.of([1, 2, 4]) and vae.quantizer.codebook_size == 64


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(UnknownComponentError, match="var_d16") as info:
        varkit.create_model("var_d17")
    assert "Did you mean" in str(info.value)


def test_unknown_override_names_the_accepted_arguments() -> None:
    with pytest.raises(TypeError, match="depht"):
        varkit.create_model("var_tiny", depht=3)


def test_model_option_node_builds_what_create_model_builds() -> None:
    for name in ("var_tiny", "var_demo"):
        node = model_config(name)
        torch.manual_seed(0)
        from_node = MODELS.resolve(node)  # the Hydra node: name + every argument (user overrides included)
        torch.manual_seed(0)
        direct = varkit.create_model(name)
        assert from_node.config == direct.config
        for (key, a), (_, b) in zip(from_node.state_dict().items(), direct.state_dict().items(), strict=True):
            assert torch.equal(a, b), key


def test_derived_values_are_computed_not_copied() -> None:
    configs = preset_configs()
    assert configs["model"]["var_d16"]["drop_path"] == 0.1 * 16 / 24
    assert configs["model"]["var_d36"]["shared_adaln"] is True
    assert configs["tokenizer"]["vqvae_f16"] == {"name": "vqvae_f16", **VQVAE_PRESETS["vqvae_f16"]["tokenizer"]}
    assert tokenizer_config("vqvae_tiny")["latent_channels"] == 8


def test_composed_options_come_from_the_presets(compose_cfg) -> None:
    from omegaconf import OmegaConf

    cfg = compose_cfg("train_var", ["model=var_d20", "model.depth=3"])
    assert OmegaConf.to_container(cfg.model) == {**model_config("var_d20"), "depth": 3}
    cfg = compose_cfg("train_tokenizer", ["tokenizer=vqvae_f16"])
    assert OmegaConf.to_container(cfg.tokenizer) == tokenizer_config("vqvae_f16")


def test_resolve_takes_a_name_a_mapping_a_list_or_a_built_object() -> None:
    kernel = ATTENTION_KERNELS.build("eager")
    assert ATTENTION_KERNELS.resolve(kernel) is kernel
    assert type(ATTENTION_KERNELS.resolve("eager")) is type(kernel)
    assert type(ATTENTION_KERNELS.resolve({"name": "eager"})) is type(kernel)
    assert SCALE_SCHEDULES.resolve([1, 2, 3]) == Scales.of([1, 2, 3])
    assert SCALE_SCHEDULES.resolve({"name": "explicit", "sizes": [1, 2]}) == Scales.of([1, 2])
    scales = Scales.of([1, 2])
    assert SCALE_SCHEDULES.resolve(scales) is scales
