"""One settings style for both Lightning stages: frozen dataclasses parsed from the config keys users type."""

from __future__ import annotations

import dataclasses

import pytest

from varkit.errors import ConfigError
from varkit.lit.settings import OptimSettings, ProgressiveSettings, VAROptimSettings, parse_settings, settings_dict
from varkit.lit.var_module import VARModule
from varkit.models.var_presets import var_preset

# the transformer stage's defaults as they were written before the dataclasses (reference recipe)
REFERENCE_OPTIM = {
    "base_lr": 1e-4,
    "reference_batch": 256,
    "lr": None,
    "batch_size": None,
    "weight_decay": 0.05,
    "weight_decay_end": None,
    "betas": [0.9, 0.95],
    "eps": 1e-8,
    "fused": None,
    "grad_clip": 2.0,
    "schedule": "lin0",
    "total_steps": None,
    "warmup_steps": None,
    "warmup_fraction": 0.02,
    "warmup_start": 0.005,
    "final_ratio": 0.01,
}


def test_hyper_parameters_keep_the_keys_users_type() -> None:
    module = VARModule(model=var_preset("var_tiny"), optim={"lr": 3e-4, "betas": [0.8, 0.9]})
    assert module.hparams["optim"] == {**REFERENCE_OPTIM, "lr": 3e-4, "betas": [0.8, 0.9]}
    assert list(module.hparams["optim"]) == list(REFERENCE_OPTIM)
    assert module.hparams["loss"] == {"label_smoothing": 0.0}
    assert module.hparams["progressive"] == {"fraction": 0.0, "start_scale": 4, "scale_warmup_steps": 0}
    assert module.optim_settings.betas == (0.8, 0.9) and module.optim_settings.lr == 3e-4


def test_settings_are_frozen_and_round_trip() -> None:
    settings = parse_settings(VAROptimSettings, {"betas": [0.5, 0.6], "grad_clip": None}, "optim")
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.lr = 1.0  # type: ignore[misc]
    assert parse_settings(VAROptimSettings, settings_dict(settings), "optim") == settings
    assert parse_settings(OptimSettings, None, "optim") == OptimSettings()


@pytest.mark.parametrize("kind", [VAROptimSettings, ProgressiveSettings, OptimSettings])
def test_unknown_keys_name_the_known_ones(kind: type) -> None:
    with pytest.raises(ConfigError, match=r"unknown key\(s\) colour in 'x'; known keys: .*"):
        parse_settings(kind, {"colour": 1}, "x")


def test_var_module_rejects_an_unknown_optim_key() -> None:
    with pytest.raises(ConfigError, match=r"warmup_step\b.*known keys"):
        VARModule(model=var_preset("var_tiny"), optim={"warmup_step": 3})


def test_tokenizer_is_held_outside_the_module_tree() -> None:
    import varkit

    module = VARModule(model=var_preset("var_tiny"), tokenizer=varkit.create_tokenizer("vqvae_tiny"))
    assert module.tokenizer is not None
    assert all(name.startswith("model.") for name in module.state_dict())
    assert "tokenizer" not in dict(module.named_children())
