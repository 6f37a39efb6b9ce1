"""What a fine-tune trains: freezing parts of either stage, and LoRA adapters through ``peft`` (VAR paper, Sec. 4
trains everything from scratch; these are the knobs for adapting released weights to small new datasets).

Plain PyTorch (``peft`` is imported only when LoRA is asked for; it is the ``finetune`` extra).

Transformer (:class:`varkit.models.var.VAR`):

* ``freeze_blocks=N`` freezes the first N blocks (the coarse, generic layers), ``freeze_embeddings`` the class,
  word and position embeddings and the start tokens, ``freeze`` any parameter-name prefixes;
* ``lora.rank > 0`` freezes the whole transformer and adds rank-``r`` adapters (``W + alpha/r * B A``, ``B = 0``
  at the start, so training starts exactly at the loaded weights) on the attention (``qkv``, ``proj``) and MLP
  (``fc1``, ``fc2``) projections; ``lora.also_train`` keeps some parameters trainable next to the adapters (by
  default the class embedding, whose new rows must learn the new classes). :func:`merge_lora` folds the adapters
  into plain ``nn.Linear`` weights for export, so a LoRA fine-tune exports an ordinary VAR.

Tokenizer (:class:`varkit.models.vqvae.VQVAE`): ``freeze_encoder`` (encoder + ``quant_conv``) or
``decoder_only`` (everything but the decoder and ``post_quant_conv``: codebook, φ convs and encoder fixed, so the
token of every image is unchanged and a transformer trained on the old tokens stays valid).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from varkit.errors import ConfigError

__all__ = [
    "DEFAULT_TOKENIZER_FINETUNE",
    "DEFAULT_VAR_FINETUNE",
    "apply_tokenizer_finetune",
    "apply_var_finetune",
    "has_lora",
    "merge_lora",
    "trainable_parameters",
]

logger = logging.getLogger(__name__)

DEFAULT_LORA: dict[str, Any] = {
    "rank": 0,
    "alpha": 16,
    "dropout": 0.0,
    "target_modules": ["qkv", "proj", "fc1", "fc2"],
    "also_train": ["class_embedding"],
}
#: ``finetune`` options of ``varkit train`` (the transformer)
DEFAULT_VAR_FINETUNE: dict[str, Any] = {
    # where the transformer's shape comes from with init_from: "config" (the model group) or "init_from" (the
    # stored config of the starting model; post-training recipes)
    "architecture": "config",
    "strict": True,
    "class_map": None,
    "freeze_blocks": 0,
    "freeze_embeddings": False,
    "freeze": [],
    "lora": DEFAULT_LORA,
}
#: ``finetune`` options of ``varkit train-tokenizer``
DEFAULT_TOKENIZER_FINETUNE: dict[str, Any] = {
    "strict": True,
    "freeze_encoder": False,
    "decoder_only": False,
    "freeze": [],
}
_EMBEDDINGS = ("class_embedding.", "word_embedding.", "position_embedding.", "start_tokens")


def merged_options(defaults: Mapping[str, Any], given: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
    """``defaults`` updated by ``given`` (one level of nesting); unknown keys are a :class:`ConfigError`."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        known = ", ".join(sorted(defaults))
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in '{where}'; known keys: {known}")
    out = dict(defaults)
    for key, value in given.items():
        if isinstance(defaults[key], Mapping) and value is not None:
            out[key] = merged_options(defaults[key], value, f"{where}.{key}")
        else:
            out[key] = value
    return out


def _freeze_prefixes(model: nn.Module, prefixes: Sequence[str]) -> int:
    count = 0
    for name, parameter in model.named_parameters():
        if any(name == p.rstrip(".") or name.startswith(p if p.endswith(".") else p + ".") for p in prefixes):
            parameter.requires_grad_(False)
            count += parameter.numel()
    return count


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def has_lora(model: nn.Module) -> bool:
    return any("lora_" in name for name, _ in model.named_parameters())


def apply_var_finetune(model: nn.Module, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Freeze parts of a VAR and/or add LoRA adapters in place (options: :data:`DEFAULT_VAR_FINETUNE`)."""
    settings = merged_options(DEFAULT_VAR_FINETUNE, options, "finetune")
    blocks: nn.ModuleList = model.blocks  # type: ignore[assignment]
    freeze_blocks = int(settings["freeze_blocks"])
    if not 0 <= freeze_blocks <= len(blocks):
        raise ConfigError(f"finetune.freeze_blocks={freeze_blocks} is outside 0..{len(blocks)} (the model's depth)")
    prefixes = [f"blocks.{i}." for i in range(freeze_blocks)] + [str(p) for p in settings["freeze"]]
    if settings["freeze_embeddings"]:
        prefixes += list(_EMBEDDINGS)
    _freeze_prefixes(model, prefixes)
    lora = settings["lora"]
    if int(lora["rank"]) > 0:
        _inject_lora(model, lora)
    trainable, total = trainable_parameters(model)
    logger.info("fine-tune: %d of %d parameters trainable (%.2f%%)", trainable, total, 100.0 * trainable / total)
    return settings


def _inject_lora(model: nn.Module, lora: Mapping[str, Any]) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    targets = [str(t) for t in lora["target_modules"]]
    present = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    absent = sorted(set(targets) - present)
    if absent:
        raise ConfigError(
            f"finetune.lora.target_modules {absent} name no nn.Linear of the model; known: {', '.join(sorted(present))}"
        )
    also = [str(p) for p in lora["also_train"]]
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    config = LoraConfig(
        r=int(lora["rank"]),
        lora_alpha=int(lora["alpha"]),
        lora_dropout=float(lora["dropout"]),
        target_modules=targets,
        bias="none",
    )
    inject_adapter_in_model(config, model)  # adds lora_A/lora_B (trainable) around the frozen base layers
    for name, parameter in model.named_parameters():
        if any(name == p or name.startswith(p + ".") for p in also):
            parameter.requires_grad_(True)


def merge_lora(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every LoRA adapter folded into its base ``nn.Linear`` (``W += alpha/r * B A``)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    merged = copy.deepcopy(model)
    replacements = [(name, module) for name, module in merged.named_modules() if isinstance(module, BaseTunerLayer)]
    for name, module in replacements:
        module.merge()
        parent_name, _, child = name.rpartition(".")
        parent = merged.get_submodule(parent_name) if parent_name else merged
        setattr(parent, child, module.get_base_layer())
    for parameter in merged.parameters():
        parameter.requires_grad_(True)
    return merged


def apply_tokenizer_finetune(vae: nn.Module, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Freeze parts of a VQVAE in place (options: :data:`DEFAULT_TOKENIZER_FINETUNE`)."""
    settings = merged_options(DEFAULT_TOKENIZER_FINETUNE, options, "finetune")
    prefixes = [str(p) for p in settings["freeze"]]
    if settings["freeze_encoder"] or settings["decoder_only"]:
        prefixes += ["encoder.", "quant_conv."]
    if settings["decoder_only"]:
        prefixes += ["quantizer."]
    _freeze_prefixes(vae, prefixes)
    trainable, total = trainable_parameters(vae)
    if trainable == 0:
        raise ConfigError("the tokenizer fine-tune freezes every parameter: nothing would train")
    logger.info("tokenizer fine-tune: %d of %d parameters trainable", trainable, total)
    return settings
