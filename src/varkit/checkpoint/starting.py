"""Starting weights and frozen reference models of post-training objectives (CCA: Chen et al., ICLR 2025, Sec. 3).

Post-training starts from a trained generator directory (``<run>/model`` of ``varkit train``, or ``varkit
convert`` output) given as the top-level ``init_from`` of ``varkit train``:

* :func:`starting_arguments` — with ``finetune.architecture=init_from``, the transformer's architecture comes from
  that directory (one source of truth), the training-only settings (dropout, drop path, class dropout, attention
  kernel) from the composed config;
* :func:`load_reference` — a frozen copy of a directory's transformer (or of the model's starting weights), the
  reference model of an objective.

The starting weights themselves are loaded by :func:`varkit.checkpoint.init.initialize_from` (strict, with class
remapping). Plain PyTorch (no Lightning, no Hydra).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from torch import nn

from varkit.checkpoint.tokenizer_source import freeze
from varkit.errors import ConfigError

__all__ = ["TRAINING_ONLY_KEYS", "load_reference", "load_starting_weights", "starting_arguments"]

logger = logging.getLogger(__name__)

#: VAR arguments that change training only, not the weights: the composed config decides them
TRAINING_ONLY_KEYS = ("class_dropout", "drop_path", "dropout", "attention_dropout", "attention")


def _transformer_dir(directory: str | Path) -> Path:
    from varkit.checkpoint.io import CONFIG_FILE

    root = Path(directory).expanduser()
    for candidate in (root, root / "var"):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    raise ConfigError(f"init_from/reference {root} is not a generator directory (no config.json, no var/config.json)")


def _read_var_config(directory: str | Path) -> tuple[Path, dict[str, Any]]:
    from varkit.checkpoint.io import read_config

    folder = _transformer_dir(directory)
    document = read_config(folder)
    if document.get("kind") != "var":
        raise ConfigError(f"{folder} holds a {document.get('kind')!r} model, not a VAR transformer")
    return folder, dict(document["config"])


def starting_arguments(directory: str | Path, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The VAR arguments of a run starting from ``directory``: its architecture, ``arguments``' training options."""
    _, stored = _read_var_config(directory)
    merged = dict(stored)
    for key in TRAINING_ONLY_KEYS:
        if key in arguments:
            merged[key] = arguments[key]
    for key in ("scales", "codebook_size", "code_dim"):
        if key in arguments and arguments[key] != stored.get(key):
            raise ConfigError(
                f"the transformer in {directory} has {key}={stored.get(key)}, the tokenizer of this run has "
                f"{arguments[key]}: use the tokenizer the model was trained with"
            )
    differing = sorted(k for k in arguments if k not in TRAINING_ONLY_KEYS and arguments[k] != stored.get(k))
    if differing:
        logger.info("architecture taken from %s (differs from the model config in: %s)", directory, differing)
    return merged


def load_starting_weights(model: nn.Module, directory: str | Path) -> None:
    """Copy the transformer weights of generator directory ``directory`` into ``model`` (shapes must match)."""
    from safetensors.torch import load_file

    from varkit.checkpoint.io import WEIGHTS_FILE

    folder, _ = _read_var_config(directory)
    state = load_file(str(folder / WEIGHTS_FILE), device="cpu")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ConfigError(f"cannot start from {folder}: its weights do not fit the configured model ({err})") from None
    logger.info("starting weights loaded from %s", folder)


def load_reference(directory: str | Path | None, model: nn.Module) -> nn.Module:
    """A frozen reference transformer: the weights of ``directory``, or a copy of ``model``'s current weights.

    The reference keeps ``model``'s configuration (an architecture mismatch with ``directory`` is an error) and
    has class dropout off: the objective decides which labels it sees.
    """
    reference = copy.deepcopy(model)
    if directory is not None:
        load_starting_weights(reference, directory)
    if hasattr(reference, "class_dropout"):
        cast(Any, reference).class_dropout = 0.0  # a plain float attribute of VAR
    return freeze(reference)  # eval mode here; the module sets its train/eval mode with the policy each step
