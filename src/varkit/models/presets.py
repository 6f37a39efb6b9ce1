"""Named models and tokenizers — the one definition behind ``varkit.create_model``, ``varkit.create_tokenizer`` and
the ``model=`` / ``tokenizer=`` config options (VAR paper, Sec. 4 and Tab. 1; the released VQVAE, Sec. 3.3).

The shapes themselves are plain data in :mod:`varkit.models.var_presets` (:data:`VAR_PRESETS`) and
:mod:`varkit.models.vqvae` (:data:`VQVAE_PRESETS`). This module registers each as a factory in
:data:`varkit.registry.MODELS` / :data:`varkit.registry.TOKENIZERS`, and renders the config node each Hydra option
holds (:func:`preset_configs`; ``varkit.config`` stores them in Hydra's ConfigStore), so there is no YAML copy of a
preset to keep in sync: ``model=var_d16 model.depth=20`` starts from the same dict as ``create_model("var_d16",
depth=20)``.

>>> from varkit.registry import MODELS
>>> MODELS.build("var_tiny", depth=1).depth
1
>>> preset_configs()["model"]["var_d16"]["drop_path"] == 0.1 * 16 / 24  # derived once, in Python
True
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from varkit.models.var import VAR
from varkit.models.var_presets import VAR_PRESETS, var_preset
from varkit.models.vqvae import VQVAE, VQVAE_PRESETS, build_vqvae
from varkit.registry import MODELS, TOKENIZERS

__all__ = ["model_config", "preset_configs", "tokenizer_config"]

# arguments with their own config group (attention=...), so they are not part of a model option's node
_OWN_GROUP = ("attention",)


def _model_factory(name: str) -> Callable[..., VAR]:
    shape = VAR_PRESETS[name]

    def build(**overrides: Any) -> VAR:
        return VAR(**var_preset(name, **overrides))

    build.__name__ = build.__qualname__ = name
    build.__doc__ = (
        f"VAR {shape['depth']} blocks, width {shape['width']}, {shape['num_heads']} heads, "
        f"{shape['num_classes']} classes, {shape['codebook_size']} codes"
    )
    return build


def _tokenizer_factory(name: str) -> Callable[..., VQVAE]:
    preset = VQVAE_PRESETS[name]

    def build(*, quantizer: Mapping[str, Any] | None = None, scales: Any = None, **tokenizer_overrides: Any) -> VQVAE:
        arguments = copy.deepcopy(preset)
        arguments["tokenizer"].update(tokenizer_overrides)
        return build_vqvae(
            arguments["tokenizer"],
            dict(quantizer) if quantizer is not None else arguments["quantizer"],
            scales if scales is not None else arguments["scales"],
        )

    args = preset["tokenizer"]
    build.__name__ = build.__qualname__ = name
    build.__doc__ = (
        f"VQVAE {args['image_size']}px, {2 ** (len(args['channel_multipliers']) - 1)}x downsampling, "
        f"{args['codebook_size']} codes of dim {args['latent_channels']}"
    )
    return build


for _name in VAR_PRESETS:
    MODELS.register(_name, _model_factory(_name))
for _name in VQVAE_PRESETS:
    TOKENIZERS.register(_name, _tokenizer_factory(_name))


def _schedule_node(scales: Any) -> Any:
    if isinstance(scales, str):
        return {"name": scales}
    if isinstance(scales, (list, tuple)):
        return {"name": "explicit", "sizes": list(scales)}
    return copy.deepcopy(scales)


def model_config(name: str) -> dict[str, Any]:
    """The ``model=<name>`` config node: ``name`` plus every :class:`VAR` argument a user may override."""
    shape = VAR_PRESETS[name]
    defaults = {
        key: param.default
        for key, param in inspect.signature(VAR.__init__).parameters.items()
        if param.default is not inspect.Parameter.empty and key not in _OWN_GROUP
    }
    node: dict[str, Any] = {"name": name, **shape}
    node.update({key: value for key, value in defaults.items() if key not in node})
    node["scales"] = _schedule_node(node["scales"])
    return node


def tokenizer_config(name: str) -> dict[str, Any]:
    """The ``tokenizer=<name>`` config node: ``name`` plus the :class:`VQVAE` arguments and ``codebook_size``
    (the quantizer and the scale schedule are config groups of their own)."""
    return {"name": name, **copy.deepcopy(VQVAE_PRESETS[name]["tokenizer"])}


def preset_configs() -> dict[str, dict[str, dict[str, Any]]]:
    """Every built-in preset's config node, by config group and option name."""
    return {
        "model": {name: model_config(name) for name in VAR_PRESETS},
        "tokenizer": {name: tokenizer_config(name) for name in VQVAE_PRESETS},
    }
